/* A minimal eegdev application, compiled and run by tests/test_eegdev.py.
 *
 * Opens DEVSTRING with EPFL's eegdev library (e.g. "tobiia|host|127.0.0.1|port|9000",
 * the TiA client plugin), reads SAMPLES samples of every "eeg" channel and then every
 * "undefined" channel (where the tobiia plugin puts the other TiA signal types),
 * all as float into one array, and prints:
 *
 *     rate <Hz> eeg <channels> undefined <channels>
 *     <one line per sample: the eeg channels, then the undefined ones>
 *
 * Exit status 1 with one line on stderr when eegdev fails, 2 on usage errors.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <eegdev.h>

#define CHUNK 64 /* samples asked for per egd_get_data() */

static int fail(const char *what)
{
	fprintf(stderr, "%s failed: %s\n", what, errno ? strerror(errno) : "no reason given");
	return 1;
}

int main(int argc, char *argv[])
{
	const char *type_names[2] = {"eeg", "undefined"};
	struct grpconf groups[2];
	unsigned int ngroups = 0;
	int counts[2], channels = 0;
	size_t stride;
	float *samples;
	long wanted, done = 0;
	struct eegdev *dev;

	if (argc != 3 || (wanted = atol(argv[2])) <= 0) {
		fprintf(stderr, "usage: %s DEVSTRING SAMPLES\n", argv[0]);
		return 2;
	}
	errno = 0;
	if (!(dev = egd_open(argv[1])))
		return fail("egd_open");

	for (int i = 0; i < 2; i++) {
		int type = egd_sensor_type(type_names[i]);
		counts[i] = type < 0 ? 0 : egd_get_numch(dev, type);
		if (counts[i] <= 0)
			continue;
		memset(&groups[ngroups], 0, sizeof(groups[ngroups]));
		groups[ngroups].sensortype = type;
		groups[ngroups].index = 0;
		groups[ngroups].nch = (unsigned int)counts[i];
		groups[ngroups].iarray = 0;
		groups[ngroups].arr_offset = (unsigned int)(channels * sizeof(float));
		groups[ngroups].datatype = EGD_FLOAT;
		ngroups++;
		channels += counts[i];
	}
	printf("rate %d eeg %d undefined %d\n", egd_get_cap(dev, EGD_CAP_FS, NULL),
	       counts[0] > 0 ? counts[0] : 0, counts[1] > 0 ? counts[1] : 0);
	if (channels == 0) {
		fprintf(stderr, "the device has no eeg or undefined channels\n");
		egd_close(dev);
		return 1;
	}

	stride = channels * sizeof(float);
	if (!(samples = malloc(stride * CHUNK)))
		return fail("malloc");
	if (egd_acq_setup(dev, 1, &stride, ngroups, groups))
		return fail("egd_acq_setup");
	if (egd_start(dev))
		return fail("egd_start");

	while (done < wanted) {
		size_t ask = wanted - done < CHUNK ? (size_t)(wanted - done) : CHUNK;
		ssize_t got = egd_get_data(dev, ask, samples);
		if (got <= 0)
			return fail("egd_get_data");
		for (ssize_t s = 0; s < got; s++) {
			for (int c = 0; c < channels; c++)
				printf(c ? " %.9g" : "%.9g", samples[s * channels + c]);
			putchar('\n');
		}
		done += got;
	}

	egd_stop(dev);
	egd_close(dev);
	free(samples);
	return fflush(stdout) ? 1 : 0;
}
