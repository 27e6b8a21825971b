/*
 * Linked into the embedded libbpf.so (scripts/build-libbpf.sh): lets the agent sleep between
 * drains of the BPF ring buffer and still hear at once about the few records that cannot wait.
 *
 * Why: the agent reads the ring on a timer. Each wakeup costs ~50 µs of CPU on this class of VM
 * and preempts the traced processes; reading every 10 ms cost a saturated server ~15 % of its
 * throughput against every 100 ms (bench/README.md). But process exec, listen() and TLS library
 * maps must reach user space within milliseconds (selection, uprobes). The BPF side writes those
 * records with BPF_RB_FORCE_WAKEUP and every other record with BPF_RB_NO_WAKEUP, so the ring's fd
 * signals only for them; a thread started by user space (pthread_create with et_wakeup_run as its
 * start routine) sleeps on that fd and writes a byte to a pipe that the JavaScript event loop
 * reads, which drains the ring at once.
 *
 * Contract: state is int[ET_WAKEUP_FIELDS], filled by et_wakeup_open and owned by the caller,
 * which keeps it alive until the thread has returned. et_wakeup_run returns when a byte is written
 * to state[ET_STOP_W] (the caller then joins it and closes the five descriptors). Only glibc 2.17
 * symbols are used (the thread is created through the caller's dlopen of pthread_create).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sys/epoll.h>
#include <unistd.h>

#define EXPORT __attribute__((visibility("default")))

enum { ET_EPOLL, ET_NOTIFY_R, ET_NOTIFY_W, ET_STOP_R, ET_STOP_W, ET_WAKEUP_FIELDS };

/* Sets up the epoll set (the ring buffer map's fd, edge-triggered: the thread wakes once per
 * forced wakeup, not while unread records stay in the ring; and the stop pipe) and the notify
 * pipe, whose read end is non-blocking for the event loop. 0, or -errno with nothing left open. */
EXPORT int et_wakeup_open(int ring_fd, int *state)
{
	int notify[2] = { -1, -1 }, stop[2] = { -1, -1 };
	int ep = epoll_create1(EPOLL_CLOEXEC);
	if (ep < 0)
		return -errno;
	if (pipe2(notify, O_CLOEXEC | O_NONBLOCK) != 0 || pipe2(stop, O_CLOEXEC) != 0)
		goto fail;
	struct epoll_event ev = { .events = EPOLLIN | EPOLLET, .data = { .fd = ring_fd } };
	if (epoll_ctl(ep, EPOLL_CTL_ADD, ring_fd, &ev) != 0)
		goto fail;
	ev.events = EPOLLIN;
	ev.data.fd = stop[0];
	if (epoll_ctl(ep, EPOLL_CTL_ADD, stop[0], &ev) != 0)
		goto fail;
	state[ET_EPOLL] = ep;
	state[ET_NOTIFY_R] = notify[0];
	state[ET_NOTIFY_W] = notify[1];
	state[ET_STOP_R] = stop[0];
	state[ET_STOP_W] = stop[1];
	return 0;
fail:;
	int err = -errno;
	for (int i = 0; i < 2; i++) {
		if (notify[i] >= 0)
			close(notify[i]);
		if (stop[i] >= 0)
			close(stop[i]);
	}
	close(ep);
	return err;
}

/* The thread: one byte into the notify pipe per wakeup of the ring (a full pipe already holds
 * one the event loop has not read: nothing is lost by dropping more). NULL when stopped, (void *)1
 * when epoll failed for another reason than a signal. */
EXPORT void *et_wakeup_run(void *arg)
{
	int *state = arg;
	struct epoll_event ev[2];
	for (;;) {
		int n = epoll_wait(state[ET_EPOLL], ev, 2, -1);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return (void *)1;
		}
		int ring = 0;
		for (int i = 0; i < n; i++) {
			if (ev[i].data.fd == state[ET_STOP_R])
				return NULL;
			ring = 1;
		}
		if (ring) {
			char b = 1;
			ssize_t w = write(state[ET_NOTIFY_W], &b, 1);
			(void)w;
		}
	}
}
