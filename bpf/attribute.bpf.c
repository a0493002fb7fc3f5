// SPDX-License-Identifier: GPL-2.0
// beacond's attribution source: who changed a watched file. A kprobe on fsnotify(), the one
// function every inotify/fanotify event passes through, runs in the context of the process
// making the change and before the event is queued to any inotify reader, so the record is in
// the ring buffer before the beacon can see the inotify event. Only inodes user space put in
// `watched` (a directory, whose entries are then covered, or a file) produce records; records
// the ring cannot take are counted in `dropped`. CO-RE against vmlinux.h (bpf/build.sh).
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>

char LICENSE[] SEC("license") = "GPL";

#define NAME_CAP 256
#define EXE_CAP 256   /* power of two: the verifier bound for the path walk */
#define ARGS_CAP 512  /* power of two */
#define EXE_DEPTH 24  /* path components (and mount crossings) walked at most */

/* What fsnotify reports that attribution cares about (FS_* == IN_* values). */
#define FS_MODIFY 0x00000002
#define FS_ATTRIB 0x00000004
#define FS_CLOSE_WRITE 0x00000008
#define FS_MOVED_FROM 0x00000040
#define FS_MOVED_TO 0x00000080
#define FS_CREATE 0x00000100
#define FS_DELETE 0x00000200
#define FS_DELETE_SELF 0x00000400
#define FS_MOVE_SELF 0x00000800
#define WANTED (FS_MODIFY | FS_ATTRIB | FS_CLOSE_WRITE | FS_MOVED_FROM | FS_MOVED_TO | \
		FS_CREATE | FS_DELETE | FS_DELETE_SELF | FS_MOVE_SELF)
#define PF_KTHREAD 0x00200000

struct watch_key {
	__u32 dev; /* kernel dev_t of the superblock: major << 20 | minor */
	__u32 pad;
	__u64 ino;
};

struct attr_record {
	__u32 mask;
	__u32 dev;
	__u64 ino;     /* the inode the event is about (0: a directory entry event) */
	__u64 dir_ino; /* the directory, for events on an entry (0: none) */
	__u32 pid;     /* thread id (host) */
	__u32 tgid;    /* process id (host) */
	__u32 uid;
	__u32 euid;
	__u32 loginuid;
	__u32 sessionid;
	__u32 name_len;
	__u32 exe_len;  /* 0: unknown (no mm, or a path deeper/longer than the walk) */
	__u32 args_size;
	__u32 args_len;
	__u64 time_ns;
	char comm[16];
	char name[NAME_CAP];
	char exe[EXE_CAP];
	char args[ARGS_CAP];
};

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1024 * 1024); /* overridden by the loader */
} records SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 8192);
	__type(key, struct watch_key);
	__type(value, __u8);
} watched SEC(".maps");

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

static __always_inline int is_watched(__u32 dev, __u64 ino)
{
	struct watch_key k = { .dev = dev, .pad = 0, .ino = ino };
	return ino && bpf_map_lookup_elem(&watched, &k) != NULL;
}

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

/* fsnotify's sixth argument (`inode`); this libbpf's PT_REGS_PARM stops at five. */
#if defined(__TARGET_ARCH_x86)
#define PARM6(ctx) ((ctx)->r9)
#elif defined(__TARGET_ARCH_arm64)
#define PARM6(ctx) (((struct user_pt_regs *)(ctx))->regs[5])
#else
#error "attribute.bpf.c: fsnotify's sixth argument is not mapped for this architecture"
#endif

/* int fsnotify(__u32 mask, const void *data, int data_type, struct inode *dir,
 *              const struct qstr *file_name, struct inode *inode, __u32 cookie) */
SEC("kprobe/fsnotify")
int on_fsnotify(struct pt_regs *ctx)
{
	__u32 mask = (__u32)PT_REGS_PARM1(ctx);
	struct inode *dir = (struct inode *)PT_REGS_PARM4(ctx);
	const struct qstr *file_name = (const struct qstr *)PT_REGS_PARM5(ctx);
	struct inode *inode = (struct inode *)PARM6(ctx);
	if (!(mask & WANTED))
		return 0;
	struct inode *any = inode ? inode : dir;
	if (!any)
		return 0;
	__u32 dev = BPF_CORE_READ(any, i_sb, s_dev);
	__u64 ino = inode ? BPF_CORE_READ(inode, i_ino) : 0;
	__u64 dir_ino = dir ? BPF_CORE_READ(dir, i_ino) : 0;
	if (!is_watched(dev, dir_ino) && !is_watched(dev, ino))
		return 0;
	struct task_struct *t = (struct task_struct *)bpf_get_current_task();
	/* A kernel thread (writeback, a deferred fput) is nobody's action: no record. */
	if (BPF_CORE_READ(t, flags) & PF_KTHREAD)
		return 0;

	/* After exit_mm (files closed at exit) there is no mm: pid and ids only. The path walk
	 * runs before the ring reservation (the verifier then tracks no reference through it). */
	struct mm_struct *mm = BPF_CORE_READ(t, mm);
	__u32 exe_off = mm ? exe_path(BPF_CORE_READ(mm, exe_file)) : EXE_CAP;

	struct attr_record *r = bpf_ringbuf_reserve(&records, sizeof(*r), 0);
	if (!r) {
		__u32 zero = 0;
		__u64 *n = bpf_map_lookup_elem(&dropped, &zero);
		if (n)
			*n += 1; /* per-CPU slot: no other writer while this program runs */
		return 0;
	}
	r->mask = mask;
	r->dev = dev;
	r->ino = ino;
	r->dir_ino = dir_ino;
	r->pid = BPF_CORE_READ(t, pid);
	r->tgid = BPF_CORE_READ(t, tgid);
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
	bpf_get_current_comm(&r->comm, sizeof(r->comm));

	r->name_len = 0;
	r->name[0] = 0;
	if (file_name) {
		const unsigned char *n = BPF_CORE_READ(file_name, name);
		long got = bpf_probe_read_kernel_str(&r->name, sizeof(r->name), n);
		r->name_len = got > 0 ? got - 1 : 0;
	}

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
	return 0;
}
