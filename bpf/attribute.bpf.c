// SPDX-License-Identifier: GPL-2.0
// beacond's attribution source, kernel side: a process table. One record per new process
// (fork), per exec and per exit, with what identifies the process at that moment — uids, the
// audit login uid and session, comm, the executable's path and the command line from its
// memory — so user space can name the process behind a fanotify event even when the process
// is gone by the time the event is read (`useradd`, a subshell's `echo`). BTF tracepoints only
// (tp_btf): no kprobe or trampoline needed. Records the ring cannot take are counted in
// `dropped`. CO-RE against vmlinux.h (bpf/build.sh).
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>

char LICENSE[] SEC("license") = "GPL";

#define EXE_CAP 256   /* power of two: the verifier bound for the path walk */
#define ARGS_CAP 512  /* power of two */
#define EXE_DEPTH 24  /* path components (and mount crossings) walked at most */

#define KIND_FORK 1
#define KIND_EXEC 2
#define KIND_EXIT 3

struct proc_record {
	__u32 kind;
	__u32 pid;  /* process id (host tgid) */
	__u32 ppid; /* parent's process id */
	__u32 uid;
	__u32 euid;
	__u32 loginuid;
	__u32 sessionid;
	__u32 exe_len;  /* 0: unknown */
	__u32 args_size;
	__u32 args_len;
	__u64 time_ns;
	char comm[16];
	char exe[EXE_CAP];
	char args[ARGS_CAP];
};

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4 * 1024 * 1024); /* overridden by the loader */
} records SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} dropped SEC(".maps");

/* The exe path is written backwards from the end of the first half; the second half absorbs
 * the verifier's worst case. */
struct scratch {
	char buf[2 * EXE_CAP];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct scratch);
} scratch SEC(".maps");

/* One step of the executable's path walk (bpf_loop: verified once, not per iteration). */
struct walk {
	struct dentry *d;
	struct vfsmount *vm;
	struct mount *m;
	__u32 off;  /* the path so far is buf[off, EXE_CAP) */
	int done;   /* 1: reached the root; -1: too long, or no scratch */
};

static long walk_step(__u32 i, void *arg)
{
	struct walk *w = arg;
	__u32 zero = 0;
	struct scratch *s = bpf_map_lookup_elem(&scratch, &zero);
	if (!s) {
		w->done = -1;
		return 1;
	}
	/* Locals: CO-RE relocates kernel types only, and `struct walk` is ours. */
	struct dentry *d = w->d;
	struct vfsmount *vm = w->vm;
	struct mount *m = w->m;
	struct dentry *mnt_root = BPF_CORE_READ(vm, mnt_root);
	if (d == mnt_root) {
		struct mount *parent = BPF_CORE_READ(m, mnt_parent);
		if (parent == m) {
			w->done = 1;
			return 1;
		}
		w->d = BPF_CORE_READ(m, mnt_mountpoint);
		w->m = parent;
		w->vm = &parent->mnt;
		return 0;
	}
	struct dentry *up = BPF_CORE_READ(d, d_parent);
	if (up == d) {
		w->done = 1;
		return 1;
	}
	struct qstr q = BPF_CORE_READ(d, d_name);
	__u32 len = q.len;
	__u32 off = w->off;
	if (off > EXE_CAP || len + 1 >= off) {
		w->done = -1;
		return 1;
	}
	off -= len + 1;
	bpf_probe_read_kernel(&s->buf[(off + 1) & (EXE_CAP - 1)], len & (EXE_CAP - 1), q.name);
	s->buf[off & (EXE_CAP - 1)] = '/';
	w->off = off;
	w->d = up;
	return 0;
}

/* The executable's path into scratch, walking dentries to the root and across mounts; returns
 * where it starts in the buffer, or EXE_CAP when unknown. */
static __always_inline __u32 exe_path(struct file *f)
{
	if (!f)
		return EXE_CAP;
	struct walk w = {};
	w.d = BPF_CORE_READ(f, f_path.dentry);
	w.vm = BPF_CORE_READ(f, f_path.mnt);
	w.m = container_of(w.vm, struct mount, mnt);
	w.off = EXE_CAP;
	bpf_loop(EXE_DEPTH, walk_step, &w, 0);
	if (w.done != 1)
		return EXE_CAP;
	return w.off;
}

static __always_inline void count_drop(void)
{
	__u32 zero = 0;
	__u64 *n = bpf_map_lookup_elem(&dropped, &zero);
	if (n)
		*n += 1; /* per-CPU slot: no other writer while this program runs */
}

/* `t`'s identity; its memory (argv) is read from the current task's address space, which is
 * `t`'s own at exec and a copy-on-write twin of it at fork. */
static __always_inline void record(struct task_struct *t, __u32 kind, int with_image)
{
	struct mm_struct *mm = with_image ? BPF_CORE_READ(t, mm) : NULL;
	/* The walk runs before the ring reservation (the verifier then tracks no reference). */
	__u32 exe_off = mm ? exe_path(BPF_CORE_READ(mm, exe_file)) : EXE_CAP;
	struct proc_record *r = bpf_ringbuf_reserve(&records, sizeof(*r), 0);
	if (!r) {
		count_drop();
		return;
	}
	r->kind = kind;
	r->pid = BPF_CORE_READ(t, tgid);
	r->ppid = BPF_CORE_READ(t, real_parent, tgid);
	r->uid = BPF_CORE_READ(t, cred, uid.val);
	r->euid = BPF_CORE_READ(t, cred, euid.val);
	if (bpf_core_field_exists(t->loginuid)) {
		r->loginuid = BPF_CORE_READ(t, loginuid.val);
		r->sessionid = BPF_CORE_READ(t, sessionid);
	} else {
		r->loginuid = (__u32)-1;
		r->sessionid = (__u32)-1;
	}
	r->time_ns = bpf_ktime_get_ns();
	BPF_CORE_READ_STR_INTO(&r->comm, t, comm);
	r->exe_len = 0;
	r->args_size = 0;
	r->args_len = 0;
	if (mm) {
		__u32 zero = 0;
		struct scratch *s = bpf_map_lookup_elem(&scratch, &zero);
		if (s && exe_off < EXE_CAP) {
			bpf_probe_read_kernel(r->exe, EXE_CAP, &s->buf[exe_off & (EXE_CAP - 1)]);
			r->exe_len = EXE_CAP - exe_off;
		}
		unsigned long start = BPF_CORE_READ(mm, arg_start);
		unsigned long end = BPF_CORE_READ(mm, arg_end);
		__u64 size = end > start ? end - start : 0;
		r->args_size = size;
		__u32 len = size < ARGS_CAP ? size : ARGS_CAP;
		if (len > ARGS_CAP)
			len = ARGS_CAP;
		if (len && bpf_probe_read_user(&r->args, len, (const void *)start) == 0)
			r->args_len = len;
	}
	bpf_ringbuf_submit(r, 0);
}

SEC("tp_btf/sched_process_fork")
int BPF_PROG(on_fork, struct task_struct *parent, struct task_struct *child)
{
	/* New processes only: a new thread shares its process's entry. */
	if (BPF_CORE_READ(child, pid) != BPF_CORE_READ(child, tgid))
		return 0;
	record(child, KIND_FORK, 1);
	return 0;
}

SEC("tp_btf/sched_process_exec")
int BPF_PROG(on_exec, struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
{
	record(p, KIND_EXEC, 1);
	return 0;
}

SEC("tp_btf/sched_process_exit")
int BPF_PROG(on_exit, struct task_struct *p, bool group_dead)
{
	if (!group_dead)
		return 0;
	record(p, KIND_EXIT, 0);
	return 0;
}
