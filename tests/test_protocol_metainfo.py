"""Metainfo XML (SPEC section 3): the exact document we send, every variant we accept."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tia.protocol.metainfo import MetaInfo, MetaInfoError, SignalInfo, Subject, format_rate
from tia.protocol.signals import SIGNAL_TYPES, by_name
from tia.protocol.xmlsafe import MAX_XML_BYTES, MAX_XML_DEPTH, parse_xml


def sig(name: str, rate: float, block: int, *labels: str | None) -> SignalInfo:
    return SignalInfo(by_name(name), rate, block, tuple(labels))


def doc(body: str, root: str = '<tiaMetaInfo version="1.0">') -> bytes:
    return (root + body + "</tiaMetaInfo>").encode("utf-8")


EEG_ONLY = '<signal type="eeg" samplingRate="250" blockSize="1" numChannels="1"/>'

SMALL = MetaInfo(
    500,
    10,
    # deliberately not in flag order
    (sig("bp", 250, 5, "BP"), sig("eeg", 500, 10, "Cz", "C3", "C4")),
    Subject("S01", "Ann", "Lee"),
)

SMALL_XML = (
    b'<tiaMetaInfo version="1.0">\n'
    b'\t<subject id="S01" firstName="Ann" surname="Lee"/>\n'
    b'\t<masterSignal samplingRate="500" blockSize="10"/>\n'
    b'\t<signal type="eeg" samplingRate="500" blockSize="10" numChannels="3">\n'
    b'\t\t<channel nr="1" label="Cz"/>\n'
    b'\t\t<channel nr="2" label="C3"/>\n'
    b'\t\t<channel nr="3" label="C4"/>\n'
    b"\t</signal>\n"
    b'\t<signal type="bp" samplingRate="250" blockSize="5" numChannels="1">\n'
    b'\t\t<channel nr="1" label="BP"/>\n'
    b"\t</signal>\n"
    b"</tiaMetaInfo>\n\n"
)

# The example of SPEC section 3, verbatim (declaration, two-space indentation,
# several channel elements on one line).
SPEC_EXAMPLE = b"""<?xml version="1.0" encoding="UTF-8"?>
<tiaMetaInfo version="1.0">
  <subject id="S01" firstName="" surname=""/>
  <masterSignal samplingRate="500" blockSize="10"/>
  <signal type="eeg" samplingRate="500" blockSize="10" numChannels="3">
    <channel nr="1" label="Cz"/> <channel nr="2" label="C3"/> <channel nr="3" label="C4"/>
  </signal>
  <signal type="bp" samplingRate="250" blockSize="5" numChannels="1">
    <channel nr="1" label="BP"/>
  </signal>
</tiaMetaInfo>
"""


# ---------------------------------------------------------------------------
# the document we send


def test_to_xml_exact_bytes() -> None:
    assert SMALL.to_xml() == SMALL_XML


def test_to_xml_layout_rules() -> None:
    xml = SMALL.to_xml()
    assert not xml.startswith(b"<?xml")
    assert xml.startswith(b'<tiaMetaInfo version="1.0">\n\t<subject ')
    assert xml.endswith(b"</tiaMetaInfo>\n\n")
    assert b"  " not in xml  # tabs, never spaces, for indentation
    assert b"sampleRate" not in xml


def test_spec_section_7_layout() -> None:
    info = MetaInfo(250, 1, (sig("eeg", 250, 1, "eeg1", "eeg2", "eeg3", "eeg4"),), Subject("...", "...", "..."))
    xml = info.to_xml()
    assert xml.startswith(
        b'<tiaMetaInfo version="1.0">\n\t<subject id="..." firstName="..." surname="..."/>\n'
        b'\t<masterSignal samplingRate="250" blockSize="1"/>\n'
        b'\t<signal type="eeg" samplingRate="250" blockSize="1" numChannels="4">\n'
        b'\t\t<channel nr="1" label="eeg1"/>\n'
    )
    assert xml.endswith(b'\t\t<channel nr="4" label="eeg4"/>\n\t</signal>\n</tiaMetaInfo>\n\n')
    assert MetaInfo.from_xml(xml) == info


def test_signals_are_kept_in_ascending_flag_order() -> None:
    every = tuple(SignalInfo(t, 100, 1, ("x",)) for t in reversed(SIGNAL_TYPES))
    info = MetaInfo(100, 1, every)
    assert [s.flag for s in info.signals] == sorted(t.flag for t in SIGNAL_TYPES)
    xml = info.to_xml().decode()
    positions = [xml.index(f'type="{t.name}"') for t in SIGNAL_TYPES]
    assert positions == sorted(positions)
    assert SMALL.signals[0].type.name == "eeg"


def test_to_xml_sends_canonical_names_for_aliases() -> None:
    info = MetaInfo(
        100,
        1,
        (
            sig("joystick", 100, 1, "x"),
            sig("buttons", 100, 1, "b"),
            sig("user_1", 100, 1, "u"),
            sig("mouse", 100, 1, "m"),
        ),
    )
    xml = info.to_xml()
    for name in (b"axis", b"button", b"user1", b"keycode"):
        assert b'type="' + name + b'"' in xml
    for alias in (b"joystick", b"buttons", b"user_1", b"mouse"):
        assert b'type="' + alias + b'"' not in xml


def test_unlabelled_channels_are_sent_with_empty_labels() -> None:
    info = MetaInfo(100, 1, (sig("eeg", 100, 1, None, "C3", None),))
    xml = info.to_xml()
    assert b'<channel nr="1" label=""/>' in xml
    assert b'<channel nr="2" label="C3"/>' in xml
    assert b'<channel nr="3" label=""/>' in xml
    assert MetaInfo.from_xml(xml).signals[0].labels == ("", "C3", "")


def test_default_subject_is_empty() -> None:
    info = MetaInfo(100, 1, (sig("eeg", 100, 1, "a"),))
    assert info.subject == Subject("", "", "")
    assert b'<subject id="" firstName="" surname=""/>' in info.to_xml()


def test_attribute_escaping() -> None:
    nasty = "a\"b&c<d>e'f"
    info = MetaInfo(
        100,
        1,
        (sig("eeg", 100, 1, nasty, "tab\there", "line\nbreak\r\n", "&amp;"),),
        Subject('id "1"', "<Ann>", "O'Brien & Sons"),
    )
    xml = info.to_xml()
    assert b'label="a&quot;b&amp;c&lt;d&gt;e\'f"' in xml
    assert b'label="tab&#9;here"' in xml
    assert b'label="line&#10;break&#13;&#10;"' in xml
    assert b'label="&amp;amp;"' in xml
    assert b'id="id &quot;1&quot;" firstName="&lt;Ann&gt;" surname="O\'Brien &amp; Sons"' in xml
    back = MetaInfo.from_xml(xml)
    assert back == info
    assert back.signals[0].labels == (nasty, "tab\there", "line\nbreak\r\n", "&amp;")
    assert back.subject.first_name == "<Ann>"


def test_non_ascii_is_sent_as_utf8() -> None:
    info = MetaInfo(100, 1, (sig("eeg", 100, 1, "\u00dcber", "\u03b1\U0001f600"),), Subject("J\u00fcrgen"))
    xml = info.to_xml()
    assert 'label="\u00dcber"'.encode() in xml
    assert MetaInfo.from_xml(xml) == info


@pytest.mark.parametrize(
    ("rate", "text"),
    [
        (250, "250"),
        (250.0, "250"),
        (1, "1"),
        (0.5, "0.5"),
        (2.5, "2.5"),
        (1 / 3, "0.3333333333333333"),
        (1e20, "100000000000000000000"),
        (1e-7, "1e-07"),
    ],
)
def test_format_rate(rate: float, text: str) -> None:
    assert format_rate(rate) == text
    assert float(text) == rate


def test_fractional_rates_round_trip() -> None:
    info = MetaInfo(0.5, 1, (sig("eeg", 0.5, 1, "a"), sig("bp", 1 / 3, 1, "b")))
    xml = info.to_xml()
    assert b'samplingRate="0.5"' in xml
    assert MetaInfo.from_xml(xml) == info


def test_signal_lookup() -> None:
    eeg = SMALL.signal("eeg")
    assert eeg.labels == ("Cz", "C3", "C4")
    assert eeg.num_channels == 3
    assert eeg.flag == 0x1
    assert SMALL.signal("EEG") is eeg
    assert SMALL.signal(0x1) is eeg
    assert SMALL.signal("bp").block_size == 5
    with pytest.raises(KeyError):
        SMALL.signal("emg")
    with pytest.raises(KeyError):
        SMALL.signal(0x2)


def test_constructor_rejects_two_signals_of_one_type() -> None:
    with pytest.raises(MetaInfoError, match="one signal per"):
        MetaInfo(100, 1, (sig("button", 100, 1, "a"), sig("buttons", 100, 1, "b")))


def test_metainfo_is_frozen() -> None:
    with pytest.raises(AttributeError):
        SMALL.master_block_size = 2  # type: ignore[misc]  # frozen: what is under test


# ---------------------------------------------------------------------------
# round trip

_xml_chars = st.characters(exclude_categories=["Cs", "Cc", "Cn"]) | st.sampled_from("\t\n\r")
_xml_text = st.text(_xml_chars, max_size=12)
_rates = st.integers(1, 100_000).map(float) | st.floats(
    min_value=1e-6, max_value=1e9, allow_nan=False, allow_infinity=False
)


@st.composite
def metainfos(draw: st.DrawFn) -> MetaInfo:
    types = draw(st.lists(st.sampled_from(SIGNAL_TYPES), min_size=1, max_size=5, unique=True))
    signals = tuple(
        SignalInfo(
            signal_type,
            draw(_rates),
            draw(st.integers(1, 0xFFFF)),
            tuple(draw(st.lists(_xml_text, min_size=1, max_size=5))),
        )
        for signal_type in types
    )
    subject = Subject(draw(_xml_text), draw(_xml_text), draw(_xml_text))
    return MetaInfo(draw(_rates), draw(st.integers(1, 0xFFFF)), signals, subject)


@settings(max_examples=200, deadline=None)
@given(metainfos())
def test_round_trip(info: MetaInfo) -> None:
    xml = info.to_xml()
    assert xml.endswith(b"</tiaMetaInfo>\n\n")
    back = MetaInfo.from_xml(xml)
    assert back == info
    assert back.to_xml() == xml
    # With a declaration in front, as some peers send it, nothing changes.
    assert MetaInfo.from_xml(b'<?xml version="1.0" encoding="UTF-8"?>\n' + xml) == info


@settings(max_examples=200, deadline=None)
@given(metainfos(), st.randoms(use_true_random=False))
def test_signal_order_in_the_document_does_not_matter(info: MetaInfo, rng: random.Random) -> None:
    elements = [
        MetaInfo(1, 1, (signal,)).to_xml().decode().split("\n", 3)[3].rsplit("</tiaMetaInfo>", 1)[0]
        for signal in info.signals
    ]
    rng.shuffle(elements)
    head = info.to_xml().decode().split("\n", 3)
    shuffled = "\n".join(head[:3]) + "\n" + "".join(elements) + "</tiaMetaInfo>\n"
    assert MetaInfo.from_xml(shuffled.encode()) == info
    # Without masterSignal the result does not depend on the order either.
    without_master = "\n".join(head[:2]) + "\n" + "".join(elements) + "</tiaMetaInfo>\n"
    first_periodic = next((s for s in info.signals if not s.type.aperiodic), info.signals[0])
    parsed = MetaInfo.from_xml(without_master.encode())
    assert parsed.signals == info.signals
    assert (parsed.master_sampling_rate, parsed.master_block_size) == (
        first_periodic.sampling_rate,
        first_periodic.block_size,
    )


# ---------------------------------------------------------------------------
# variants we accept


def test_spec_example_with_declaration_and_spaces() -> None:
    info = MetaInfo.from_xml(SPEC_EXAMPLE)
    assert info == MetaInfo(
        500,
        10,
        (sig("eeg", 500, 10, "Cz", "C3", "C4"), sig("bp", 250, 5, "BP")),
        Subject("S01", "", ""),
    )
    assert info.master_sampling_rate == 500
    assert info.master_block_size == 10
    assert MetaInfo.from_xml(SMALL_XML) == SMALL


def test_sample_rate_instead_of_sampling_rate() -> None:
    info = MetaInfo.from_xml(
        doc(
            '<masterSignal sampleRate="256" blockSize="8"/>'
            '<signal type="eeg" sampleRate="256" blockSize="8" numChannels="1"/>'
        )
    )
    assert info.master_sampling_rate == 256
    assert info.signals[0].sampling_rate == 256
    assert b"sampleRate" not in info.to_xml()
    assert b'samplingRate="256"' in info.to_xml()


def test_sampling_rate_wins_over_sample_rate() -> None:
    info = MetaInfo.from_xml(
        doc('<signal type="eeg" samplingRate="100" sampleRate="200" blockSize="1" numChannels="1"/>')
    )
    assert info.signals[0].sampling_rate == 100


def test_last_name_instead_of_surname() -> None:
    info = MetaInfo.from_xml(doc('<subject id="x" firstName="A" lastName="B"/>' + EEG_ONLY))
    assert info.subject == Subject("x", "A", "B")
    assert b'surname="B"' in info.to_xml()
    assert b"lastName" not in info.to_xml()
    both = MetaInfo.from_xml(doc('<subject surname="S" lastName="L"/>' + EEG_ONLY))
    assert both.subject == Subject("", "", "S")


def test_missing_subject_and_subject_attributes() -> None:
    assert MetaInfo.from_xml(doc(EEG_ONLY)).subject == Subject()
    assert MetaInfo.from_xml(doc("<subject/>" + EEG_ONLY)).subject == Subject()


@pytest.mark.parametrize(
    ("name", "canonical"),
    [
        ("buttons", "button"),
        ("joystick", "axis"),
        ("axes", "axis"),
        ("sensors", "sensor"),
        ("mouse", "keycode"),
        ("mousebutton", "mouse-button"),
        ("user_1", "user1"),
        ("user_2", "user2"),
        ("user_3", "user3"),
        ("user_4", "user4"),
        ("EEG", "eeg"),
        ("Bp", "bp"),
        ("USER_4", "user4"),
        ("Mouse-Button", "mouse-button"),
        ("Event", "event"),
    ],
)
def test_type_aliases_and_case(name: str, canonical: str) -> None:
    info = MetaInfo.from_xml(doc(f'<signal type="{name}" samplingRate="10" blockSize="1" numChannels="1"/>'))
    assert info.signals[0].type is by_name(canonical)
    assert f'type="{canonical}"'.encode() in info.to_xml()


def test_missing_channel_elements_and_labels() -> None:
    info = MetaInfo.from_xml(
        doc(
            '<signal type="eeg" samplingRate="100" blockSize="1" numChannels="4">'
            '<channel nr="2" label="C3"/><channel nr="4"/>'
            "</signal>"
        )
    )
    assert info.signals[0].labels == (None, "C3", None, None)
    assert info.signals[0].num_channels == 4


def test_channels_in_any_order() -> None:
    info = MetaInfo.from_xml(
        doc(
            '<signal type="eeg" samplingRate="100" blockSize="1" numChannels="3">'
            '<channel nr="3" label="c"/><channel nr="1" label="a"/><channel nr="2" label="b"/>'
            "</signal>"
        )
    )
    assert info.signals[0].labels == ("a", "b", "c")


def test_signals_in_any_order() -> None:
    eeg = '<signal type="eeg" samplingRate="100" blockSize="2" numChannels="1"/>'
    bp = '<signal type="bp" samplingRate="50" blockSize="1" numChannels="1"/>'
    button = '<signal type="button" samplingRate="50" blockSize="1" numChannels="1"/>'
    master = '<masterSignal samplingRate="100" blockSize="2"/>'
    reference = MetaInfo.from_xml(doc(master + eeg + bp + button))
    assert [s.type.name for s in reference.signals] == ["eeg", "bp", "button"]
    for body in (button + bp + eeg + master, bp + master + button + eeg):
        assert MetaInfo.from_xml(doc(body)) == reference


def test_missing_master_signal_comes_from_the_first_periodic_signal() -> None:
    eeg = '<signal type="eeg" samplingRate="100" blockSize="2" numChannels="1"/>'
    bp = '<signal type="bp" samplingRate="50" blockSize="1" numChannels="1"/>'
    button = '<signal type="button" samplingRate="7" blockSize="3" numChannels="1"/>'
    for body in (eeg + bp + button, button + bp + eeg, bp + eeg, button + eeg):
        info = MetaInfo.from_xml(doc(body))
        assert (info.master_sampling_rate, info.master_block_size) == (100, 2), body
    # No eeg: bp is the first periodic signal in flag order, button is aperiodic.
    info = MetaInfo.from_xml(doc(button + bp))
    assert (info.master_sampling_rate, info.master_block_size) == (50, 1)
    # Only aperiodic signals: the first of them (in flag order).
    event = '<signal type="event" samplingRate="9" blockSize="1" numChannels="1"/>'
    info = MetaInfo.from_xml(doc(event + button))
    assert (info.master_sampling_rate, info.master_block_size) == (7, 3)


def test_liberal_attribute_values() -> None:
    info = MetaInfo.from_xml(
        doc(
            '<masterSignal samplingRate=" 2.5e2 " blockSize=" 5 "/>'
            '<signal type=" eeg " samplingRate="250.0" blockSize="05" numChannels="2">'
            '<channel nr=" 2 " label="x"/></signal>'
        )
    )
    assert info.master_sampling_rate == 250
    assert info.master_block_size == 5
    assert info.signals[0].block_size == 5
    assert info.signals[0].labels == (None, "x")


def test_unknown_elements_and_attributes_are_ignored() -> None:
    info = MetaInfo.from_xml(
        doc(
            '<comment>hi</comment><subject id="a" age="3"/>'
            '<signal type="eeg" samplingRate="10" blockSize="1" numChannels="1" unit="uV">'
            '<channel nr="1" label="x" unit="uV"/><extra/></signal>'
            "<!-- a comment -->"
        )
    )
    assert info.signals[0].labels == ("x",)


def test_other_encodings() -> None:
    latin = (
        b'<?xml version="1.0" encoding="ISO-8859-1"?>'
        b'<tiaMetaInfo version="1.0"><subject id="J\xfcrgen"/>' + EEG_ONLY.encode() + b"</tiaMetaInfo>"
    )
    assert MetaInfo.from_xml(latin).subject.id == "J\u00fcrgen"
    utf16 = '<?xml version="1.0" encoding="UTF-16"?>' + doc(EEG_ONLY).decode()
    assert MetaInfo.from_xml(utf16.encode("utf-16")).signals[0].type.name == "eeg"
    with_bom = b"\xef\xbb\xbf" + doc(EEG_ONLY)
    assert MetaInfo.from_xml(with_bom).signals[0].type.name == "eeg"


def test_the_largest_numbers() -> None:
    info = MetaInfo.from_xml(doc('<signal type="eeg" samplingRate="1e9" blockSize="65535" numChannels="65535"/>'))
    assert info.signals[0].block_size == 0xFFFF
    assert info.signals[0].num_channels == 0xFFFF


# ---------------------------------------------------------------------------
# rejections


def _signal(**attributes: str) -> str:
    values = {"type": "eeg", "samplingRate": "100", "blockSize": "1", "numChannels": "2"}
    values.update(attributes)
    text = " ".join(f'{k}="{v}"' for k, v in values.items() if v != "<omit>")
    return f"<signal {text}/>"


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (_signal(type="eegg"), "unknown signal type"),
        (_signal(type=""), "unknown signal type"),
        (_signal(type="user5"), "unknown signal type"),
        (_signal(type="<omit>"), "type"),
        (_signal(blockSize="1.5"), "not an integer"),
        (_signal(blockSize="ten"), "not an integer"),
        (_signal(blockSize=""), "not an integer"),
        (_signal(blockSize="0"), "out of range"),
        (_signal(blockSize="-1"), "out of range"),
        (_signal(blockSize="65536"), "out of range"),
        (_signal(blockSize="<omit>"), "blockSize"),
        (_signal(numChannels="0"), "out of range"),
        (_signal(numChannels="2.0"), "not an integer"),
        (_signal(numChannels="<omit>"), "numChannels"),
        (_signal(numChannels="9" * 5000), "not an integer"),
        (_signal(samplingRate="0"), "positive"),
        (_signal(samplingRate="-250"), "positive"),
        (_signal(samplingRate="-0.0"), "positive"),
        (_signal(samplingRate="nan"), "positive"),
        (_signal(samplingRate="inf"), "positive"),
        (_signal(samplingRate="fast"), "not a number"),
        (_signal(samplingRate=""), "not a number"),
        (_signal(samplingRate="<omit>"), "samplingRate"),
        ('<masterSignal samplingRate="0" blockSize="1"/>' + _signal(), "positive"),
        ('<masterSignal samplingRate="10" blockSize="x"/>' + _signal(), "not an integer"),
        ('<masterSignal blockSize="1"/>' + _signal(), "samplingRate"),
        ('<masterSignal samplingRate="10"/>' + _signal(), "blockSize"),
    ],
)
def test_reject_bad_signal_attributes(body: str, words: str) -> None:
    with pytest.raises(MetaInfoError, match=words):
        MetaInfo.from_xml(doc(body))


@pytest.mark.parametrize(
    ("channels", "words"),
    [
        ('<channel nr="3" label="x"/>', "exceeds"),
        ('<channel nr="1"/><channel nr="99"/>', "exceeds"),
        ('<channel nr="0" label="x"/>', "out of range"),
        ('<channel nr="-1" label="x"/>', "out of range"),
        ('<channel nr="one" label="x"/>', "not an integer"),
        ('<channel label="x"/>', "nr"),
    ],
)
def test_reject_bad_channels(channels: str, words: str) -> None:
    body = f'<signal type="eeg" samplingRate="100" blockSize="1" numChannels="2">{channels}</signal>'
    with pytest.raises(MetaInfoError, match=words):
        MetaInfo.from_xml(doc(body))


@pytest.mark.parametrize(
    "root",
    [
        '<tiaCustomSignalInfo version="1.0">',
        '<tiametainfo version="1.0">',
        '<tia:tiaMetaInfo xmlns:tia="urn:x" version="1.0">',
        '<tiaMetaInfo xmlns="urn:tia" version="1.0">',
    ],
)
def test_reject_wrong_root_element(root: str) -> None:
    closing = "</" + root[1:].split(" ", 1)[0] + ">"
    data = (root + EEG_ONLY + closing).encode()
    with pytest.raises(MetaInfoError, match="root element"):
        MetaInfo.from_xml(data)


def test_reject_no_signal() -> None:
    for body in ("", '<masterSignal samplingRate="1" blockSize="1"/>', "<subject/><signals/>"):
        with pytest.raises(MetaInfoError, match="no signal"):
            MetaInfo.from_xml(doc(body))
    # A signal nested elsewhere is not a signal of the document.
    with pytest.raises(MetaInfoError, match="no signal"):
        MetaInfo.from_xml(doc("<group>" + EEG_ONLY + "</group>"))


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("eeg", "eeg"),
        ("eeg", "EEG"),
        ("button", "buttons"),
        ("user1", "user_1"),
        ("axis", "joystick"),
    ],
)
def test_reject_duplicate_signal_type(first: str, second: str) -> None:
    body = _signal(type=first) + _signal(type=second)
    with pytest.raises(MetaInfoError, match="one signal per"):
        MetaInfo.from_xml(doc(body))


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"   ",
        b"not xml at all",
        b'<tiaMetaInfo version="1.0">',
        b'<tiaMetaInfo version="1.0"><signal></tiaMetaInfo>',
        b'<tiaMetaInfo version="1.0"/><tiaMetaInfo version="1.0"/>',
        b"<tiaMetaInfo version=1.0/>",
        b'<tiaMetaInfo version="1.0">\xff\xfe</tiaMetaInfo>',
        b'<?xml version="1.0" encoding="UTF-8"?>',
        b"\x00\x01\x02\x03",
    ],
)
def test_reject_malformed_xml(data: bytes) -> None:
    with pytest.raises(MetaInfoError):
        MetaInfo.from_xml(data)


@pytest.mark.parametrize("encoding", ["no-such-codec", "rot13", "base64", "zlib", "undefined"])
def test_reject_unusable_encoding_declaration(encoding: str) -> None:
    data = f'<?xml version="1.0" encoding="{encoding}"?>'.encode() + doc(EEG_ONLY)
    with pytest.raises(MetaInfoError):
        MetaInfo.from_xml(data)


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
  <!ENTITY lol "lol">
  <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
  <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
  <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
  <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
  <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
  <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
  <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
  <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
  <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<tiaMetaInfo version="1.0"><subject id="&lol9;"/>
<signal type="eeg" samplingRate="1" blockSize="1" numChannels="1"/></tiaMetaInfo>
"""


@pytest.mark.parametrize(
    "data",
    [
        BILLION_LAUGHS,
        b'<!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]>'
        b'<tiaMetaInfo version="1.0"><subject id="&e;"/>' + EEG_ONLY.encode() + b"</tiaMetaInfo>",
        b'<!DOCTYPE tiaMetaInfo SYSTEM "http://example.invalid/tia.dtd">' + doc(EEG_ONLY),
        b"<!DOCTYPE tiaMetaInfo>" + doc(EEG_ONLY),
    ],
)
def test_reject_dtds_and_entities(data: bytes) -> None:
    with pytest.raises(MetaInfoError, match="forbidden"):
        MetaInfo.from_xml(data)


def _nested(depth: int) -> bytes:
    """A valid document whose elements nest ``depth`` deep, the root counting as 1."""
    extra = depth - 1
    return doc("<x>" * extra + "</x>" * extra + EEG_ONLY)


def test_nesting_up_to_the_bound_is_accepted() -> None:
    assert MAX_XML_DEPTH == 16
    assert MetaInfo.from_xml(_nested(MAX_XML_DEPTH)).signals[0].type.name == "eeg"


def test_reject_nesting_deeper_than_the_bound() -> None:
    with pytest.raises(MetaInfoError, match="deeper"):
        MetaInfo.from_xml(_nested(MAX_XML_DEPTH + 1))
    with pytest.raises(MetaInfoError, match="deeper"):
        MetaInfo.from_xml(doc("<x>" * 100_000 + "</x>" * 100_000 + EEG_ONLY))


def test_document_size_bound() -> None:
    base = doc(EEG_ONLY)
    # whitespace padding after the root element is allowed by XML
    at_bound = base + b" " * (MAX_XML_BYTES - len(base))
    assert len(at_bound) == MAX_XML_BYTES
    assert MetaInfo.from_xml(at_bound).signals[0].type.name == "eeg"
    over = at_bound + b" "
    with pytest.raises(MetaInfoError, match="exceeds"):
        MetaInfo.from_xml(over)


def test_metainfo_error_is_a_value_error() -> None:
    assert issubclass(MetaInfoError, ValueError)


# ---------------------------------------------------------------------------
# the bounded XML parser itself


def test_parse_xml_bounds_are_parameters() -> None:
    assert parse_xml(b"<a><b/></a>").tag == "a"
    with pytest.raises(ValueError, match="exceeds 10 bytes"):
        parse_xml(b"<a><b/></a>", max_bytes=10)
    assert parse_xml(b"<a><b/></a>", max_bytes=11).tag == "a"
    assert parse_xml(b"<a><b><c/></b></a>", max_depth=3).tag == "a"
    with pytest.raises(ValueError, match="deeper than 2"):
        parse_xml(b"<a><b><c/></b></a>", max_depth=2)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"<a>",
        b'<?xml version="1.0" encoding="bogus"?><a/>',
        b'<?xml version="1.0" encoding="hex"?><a/>',
        b"<!DOCTYPE a><a/>",
        BILLION_LAUGHS,
    ],
)
def test_parse_xml_raises_only_value_error(data: bytes) -> None:
    with pytest.raises(ValueError):
        parse_xml(data)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_fuzz_from_xml_raises_only_metainfo_error(data: bytes) -> None:
    try:
        MetaInfo.from_xml(data)
    except MetaInfoError:
        pass


_pieces = st.sampled_from(
    [
        '<tiaMetaInfo version="1.0">',
        "</tiaMetaInfo>",
        EEG_ONLY,
        '<signal type="bp" samplingRate="-1" blockSize="1" numChannels="1">',
        '<signal type="eeg" samplingRate="1" blockSize="1" numChannels="2">',
        "</signal>",
        '<channel nr="2" label="x"/>',
        '<channel nr="7"/>',
        '<masterSignal samplingRate="1" blockSize="1"/>',
        '<subject lastName="&amp;"/>',
        '<?xml version="1.0"?>',
        "<!DOCTYPE x>",
        "&",
        "<",
        '"',
        "\u00e9",
    ]
)


@settings(max_examples=200, deadline=None)
@given(st.lists(_pieces | st.text(max_size=5), max_size=12))
def test_fuzz_structured_documents(pieces: list[str]) -> None:
    try:
        info = MetaInfo.from_xml("".join(pieces).encode("utf-8", "surrogatepass"))
    except MetaInfoError:
        return
    assert info.signals
    assert MetaInfo.from_xml(info.to_xml()) == info
