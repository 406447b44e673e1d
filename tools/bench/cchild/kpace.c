// nwbench-kpace: one short-lived process of tools/bench's kernel-pace
// scenario: ONE loopback TCP connection of a given lifetime, then exit.
//
//   nwbench-kpace out PORT LIFE_US [NETNS]   connect to 127.0.0.1:PORT, send the pid (4 bytes,
//                                            little-endian), keep the connection LIFE_US µs, close, exit
//   nwbench-kpace in LIFE_US [NETNS]         listen on 127.0.0.1, write the port (2 bytes, big-endian)
//                                            to stdout, accept one connection, keep it LIFE_US µs,
//                                            close, exit
//
// NETNS is a network namespace file (/run/netns/NAME) to enter first.
//
// Why C, built by the harness with `cc -static` as it starts: the scenario
// asks for a thousand of these a second, and on this VM every exec of the
// bench binary costs about 25 ms of CPU (its packages initialise), of a
// minimal Go program 10-14 ms, of this about 4 ms (no dynamic loader, no
// runtime). Only 127.0.0.1 is ever used; a lifetime is at most a second and
// accept gives up after 5 s, so a child never lingers.
#define _GNU_SOURCE
#include <fcntl.h>
#include <netinet/in.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static int fail(const char *what) {
	perror(what);
	return 1;
}

static long number(const char *s, long lo, long hi) {
	char *end;
	long v = strtol(s, &end, 10);
	if (*s == 0 || *end != 0 || v < lo || v > hi)
		return -1;
	return v;
}

static void hold(long us) {
	struct timespec ts = {us / 1000000, (us % 1000000) * 1000};
	while (nanosleep(&ts, &ts) != 0) {
	}
}

int main(int argc, char **argv) {
	int out = argc >= 4 && strcmp(argv[1], "out") == 0;
	int in = argc >= 3 && strcmp(argv[1], "in") == 0;
	if (!out && !in) {
		fputs("usage: out PORT LIFE_US [NETNS] | in LIFE_US [NETNS]\n", stderr);
		return 2;
	}
	long port = out ? number(argv[2], 1, 65535) : 0;
	long life = number(argv[out ? 3 : 2], 0, 1000000);
	const char *ns = argc > (out ? 4 : 3) ? argv[out ? 4 : 3] : NULL;
	if (port < 0 || life < 0) {
		fputs("bad port or lifetime (0..1000000 µs)\n", stderr);
		return 2;
	}
	if (ns) {
		int fd = open(ns, O_RDONLY | O_CLOEXEC);
		if (fd < 0 || setns(fd, CLONE_NEWNET) != 0)
			return fail(ns);
		close(fd);
	}
	struct sockaddr_in a;
	memset(&a, 0, sizeof a);
	a.sin_family = AF_INET;
	a.sin_port = htons((unsigned short)port);
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (s < 0)
		return fail("socket");
	if (out) {
		if (connect(s, (struct sockaddr *)&a, sizeof a) != 0)
			return fail("connect");
		unsigned pid = (unsigned)getpid();
		unsigned char b[4] = {pid, pid >> 8, pid >> 16, pid >> 24};
		if (write(s, b, 4) != 4)
			return fail("write");
		hold(life);
		return close(s) != 0;
	}
	socklen_t n = sizeof a;
	struct timeval tv = {5, 0};
	if (bind(s, (struct sockaddr *)&a, sizeof a) != 0 || listen(s, 1) != 0 ||
	    getsockname(s, (struct sockaddr *)&a, &n) != 0 ||
	    setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) != 0)
		return fail("listen");
	unsigned p = ntohs(a.sin_port);
	unsigned char b[2] = {p >> 8, p};
	if (write(1, b, 2) != 2)
		return fail("write");
	int c = accept4(s, NULL, NULL, SOCK_CLOEXEC);
	if (c < 0)
		return fail("accept");
	close(s);
	hold(life);
	return close(c) != 0;
}
