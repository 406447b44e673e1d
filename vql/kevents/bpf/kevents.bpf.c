// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
//
// Kernel events for netstat_watch: every TCP state change in every network
// namespace, the socket an accept() returned in the accepting process, and
// every exec. Records go to one ring buffer; parse.go in the parent folder
// reads them and must change with the structs below.
//
// Only BTF tracepoints (tp_btf): they need no tracefs (which a host may not
// mount, and the product must not mount), and they load where fentry/fexit
// are refused and kprobes are absent. CO-RE field reads keep one object
// valid across kernel versions.
//
// Regenerate the Go bindings and objects with `make bpf` (clang, bpftool).

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define AF_INET 2
#define AF_INET6 10
#define IPPROTO_TCP 6
#define TASK_COMM_LEN 16

enum record_kind {
	KIND_STATE = 1,  // inet_sock_set_state
	KIND_ACCEPT = 2, // accept()/accept4() returned a socket
	KIND_EXEC = 3,   // sched_process_exec
};

// The task that runs the event. Only trusted for a socket where the
// transition is made by a syscall of the owner (see parse.go).
struct task_facts {
	__u32 pid;  // tgid
	__u32 tid;
	__u32 ppid; // real parent's tgid
	__u32 uid;
	__u64 start; // group leader's start_boottime, ns since boot
	char comm[TASK_COMM_LEN];
};

struct conn_record {
	__u8 kind;
	__u8 family;
	__u8 oldstate;
	__u8 newstate;
	__u32 netns;
	__u64 cookie; // 0 when unknown (accept of a socket never given one)
	__u64 ts;     // bpf_ktime_get_boot_ns
	__u16 sport;  // host order
	__u16 dport;  // host order
	__u32 _pad;
	__u8 saddr[16];
	__u8 daddr[16];
	struct task_facts task;
};

#define EXEC_FILENAME 256
#define EXEC_ARGS 512

struct exec_record {
	__u8 kind;
	__u8 _pad[3];
	__u32 args_len; // bytes of args read (NUL-separated argv)
	__u64 ts;
	struct task_facts task;
	char filename[EXEC_FILENAME];
	char args[EXEC_ARGS];
};

// Sized from Go before load (ringbuf.MaxEntries).
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 21);
} events SEC(".maps");

// Records that did not fit in the ring buffer, per CPU: summed and
// reported by Go. Nothing is lost silently.
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} drops SEC(".maps");

// Syscall numbers of accept and accept4. io_uring's accept is not seen:
// the reconciling snapshot finds those sockets and their owner.
#if defined(__TARGET_ARCH_x86)
#define NR_ACCEPT 43
#define NR_ACCEPT4 288
#elif defined(__TARGET_ARCH_arm64)
#define NR_ACCEPT 202
#define NR_ACCEPT4 242
#else
#error "kevents: unsupported architecture"
#endif

// arm64's pt_regs, by the name CO-RE matches (the ___ suffix is ignored):
// vmlinux.h is generated on x86.
struct pt_regs___syscallno {
	__s32 syscallno;
} __attribute__((preserve_access_index));

static __always_inline void count_drop(void)
{
	__u32 zero = 0;
	__u64 *n = bpf_map_lookup_elem(&drops, &zero);
	if (n)
		__sync_fetch_and_add(n, 1);
}

static __always_inline void fill_task(struct task_facts *t)
{
	struct task_struct *task = bpf_get_current_task_btf();
	__u64 pid_tgid = bpf_get_current_pid_tgid();

	t->pid = pid_tgid >> 32;
	t->tid = (__u32)pid_tgid;
	t->uid = (__u32)bpf_get_current_uid_gid();
	t->ppid = BPF_CORE_READ(task, real_parent, tgid);
	t->start = BPF_CORE_READ(task, group_leader, start_boottime);
	bpf_get_current_comm(t->comm, sizeof(t->comm));
}

// fill_sock reads the tuple and namespace; the cookie is the caller's.
static __always_inline int fill_sock(struct conn_record *r, const struct sock *sk)
{
	__u16 family = BPF_CORE_READ(sk, __sk_common.skc_family);

	if (family != AF_INET && family != AF_INET6)
		return -1;
	r->family = family;
	r->netns = BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum);
	r->sport = BPF_CORE_READ(sk, __sk_common.skc_num);
	r->dport = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
	if (family == AF_INET) {
		__u32 saddr = BPF_CORE_READ(sk, __sk_common.skc_rcv_saddr);
		__u32 daddr = BPF_CORE_READ(sk, __sk_common.skc_daddr);
		__builtin_memcpy(r->saddr, &saddr, 4);
		__builtin_memcpy(r->daddr, &daddr, 4);
	} else {
		BPF_CORE_READ_INTO(&r->saddr, sk, __sk_common.skc_v6_rcv_saddr.in6_u.u6_addr8);
		BPF_CORE_READ_INTO(&r->daddr, sk, __sk_common.skc_v6_daddr.in6_u.u6_addr8);
	}
	return 0;
}

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(on_set_state, struct sock *sk, int oldstate, int newstate)
{
	if (BPF_CORE_READ(sk, sk_protocol) != IPPROTO_TCP)
		return 0;

	struct conn_record *r = bpf_ringbuf_reserve(&events, sizeof(*r), 0);
	if (!r) {
		count_drop();
		return 0;
	}
	__builtin_memset(r, 0, sizeof(*r));
	if (fill_sock(r, sk)) {
		bpf_ringbuf_discard(r, 0);
		return 0;
	}
	r->kind = KIND_STATE;
	r->oldstate = oldstate;
	r->newstate = newstate;
	// sk is a trusted pointer here, so the helper may assign the cookie
	// (the kernel gives one lazily, on first ask). Every TCP socket thus
	// has its cookie from its first state change on: the one netlink's
	// sock_diag reports, the one accept's record below reads, and the one
	// its TIME_WAIT remnant inherits.
	r->cookie = bpf_get_socket_cookie(sk);
	r->ts = bpf_ktime_get_boot_ns();
	fill_task(&r->task);
	bpf_ringbuf_submit(r, 0);
	return 0;
}

// The socket behind a file descriptor of the current task, or NULL.
static __always_inline struct sock *fd_sock(long fd)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct fdtable *fdt = BPF_CORE_READ(task, files, fdt);
	struct file **fds;
	struct file *f = NULL;

	if (!fdt || fd >= BPF_CORE_READ(fdt, max_fds))
		return NULL;
	fds = BPF_CORE_READ(fdt, fd);
	if (bpf_probe_read_kernel(&f, sizeof(f), &fds[fd]) || !f)
		return NULL;
	struct socket *sock = BPF_CORE_READ(f, private_data);
	if (!sock)
		return NULL;
	return BPF_CORE_READ(sock, sk);
}

// The accepting process is the owner of an inbound connection: its
// syscall's exit is the one place where both are known. The child socket's
// own state changes ran in softirq, under whatever task was on the CPU.
SEC("tp_btf/sys_exit")
int BPF_PROG(on_sys_exit, struct pt_regs *regs, long ret)
{
	long nr;

	if (ret < 0)
		return 0;
#if defined(__TARGET_ARCH_x86)
	nr = BPF_CORE_READ(regs, orig_ax);
#else
	nr = BPF_CORE_READ((struct pt_regs___syscallno *)regs, syscallno);
#endif
	if (nr != NR_ACCEPT && nr != NR_ACCEPT4)
		return 0;

	struct sock *sk = fd_sock(ret);
	if (!sk || BPF_CORE_READ(sk, sk_protocol) != IPPROTO_TCP)
		return 0;

	struct conn_record *r = bpf_ringbuf_reserve(&events, sizeof(*r), 0);
	if (!r) {
		count_drop();
		return 0;
	}
	__builtin_memset(r, 0, sizeof(*r));
	if (fill_sock(r, sk)) {
		bpf_ringbuf_discard(r, 0);
		return 0;
	}
	r->kind = KIND_ACCEPT;
	r->newstate = BPF_CORE_READ(sk, __sk_common.skc_state);
	r->oldstate = r->newstate;
	// A pointer read from the fd table is not trusted, so the cookie
	// helper cannot take it; the cookie was assigned by on_set_state at
	// the child's first state change (before accept could return it). A 0
	// (a socket whose state records were all dropped) is matched by tuple
	// and namespace in Go.
	r->cookie = BPF_CORE_READ(sk, __sk_common.skc_cookie.counter);
	r->ts = bpf_ktime_get_boot_ns();
	fill_task(&r->task);
	bpf_ringbuf_submit(r, 0);
	return 0;
}

// Exec events feed a cache of executables, so a connection of a process
// that has exited by the time Go reads /proc still has its Exe.
SEC("tp_btf/sched_process_exec")
int BPF_PROG(on_exec, struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
{
	struct exec_record *r = bpf_ringbuf_reserve(&events, sizeof(*r), 0);
	if (!r) {
		count_drop();
		return 0;
	}
	r->kind = KIND_EXEC;
	r->ts = bpf_ktime_get_boot_ns();
	fill_task(&r->task);
	const char *filename = BPF_CORE_READ(bprm, filename);
	if (bpf_probe_read_kernel_str(r->filename, sizeof(r->filename), filename) < 0)
		r->filename[0] = 0;

	// The new image's argv, just copied to its stack: resident, so a
	// non-faulting read finds it.
	struct mm_struct *mm = BPF_CORE_READ(p, mm);
	unsigned long start = BPF_CORE_READ(mm, arg_start);
	unsigned long end = BPF_CORE_READ(mm, arg_end);
	__u32 n = 0;
	if (end > start) {
		n = end - start;
		if (n > EXEC_ARGS - 1)
			n = EXEC_ARGS - 1;
		// The mask is for the verifier, which loses the bound above.
		n &= EXEC_ARGS - 1;
		if (bpf_probe_read_user(r->args, n, (void *)start))
			n = 0;
	}
	r->args_len = n;
	bpf_ringbuf_submit(r, 0);
	return 0;
}
