"""Bounded, hardened XML parsing for everything that arrives over the wire.

defusedxml refuses DTDs, entity expansion and external references; on top of
it we bound the document size and the element depth, so a peer cannot make us
spend memory or time on a hostile document.
"""

from __future__ import annotations

import io
from xml.etree.ElementTree import Element, ParseError

import defusedxml
import defusedxml.ElementTree as SafeElementTree

MAX_XML_BYTES = 1 << 20
MAX_XML_DEPTH = 16


def parse_xml(
    data: bytes, max_bytes: int = MAX_XML_BYTES, max_depth: int = MAX_XML_DEPTH
) -> Element:
    """Parse ``data`` into its root element or raise ``ValueError`` saying why not."""
    if len(data) > max_bytes:
        raise ValueError(f"XML document of {len(data)} bytes exceeds {max_bytes} bytes")
    depth = 0
    root: Element | None = None
    try:
        for event, element in SafeElementTree.iterparse(
            io.BytesIO(data), events=("start", "end"), forbid_dtd=True
        ):
            if event == "start":
                depth += 1
                if depth > max_depth:
                    raise ValueError(f"XML nested deeper than {max_depth} elements")
                if root is None:
                    root = element
            else:
                depth -= 1
    except ParseError as error:
        raise ValueError(f"malformed XML: {error}") from None
    except defusedxml.DefusedXmlException as error:
        raise ValueError(f"forbidden XML construct: {error}") from None
    except (LookupError, UnicodeError) as error:
        # An encoding declaration naming an unknown codec ("foo") or a
        # non-text one ("rot13") makes expat's decoder lookup raise these.
        raise ValueError(f"unsupported XML encoding: {error}") from None
    if root is None:
        raise ValueError("empty XML document")
    return root
