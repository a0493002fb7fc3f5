"""Shrink a journal file written by systemd-journal-remote: its data hash table (3.7 MB for
journal-remote's 128 MB max file size) rebuilt with systemd's minimum of 2047 buckets, every
object after it moved down, every offset adjusted, the preallocated tail cut off."""
import struct, sys
src, dst = sys.argv[1], sys.argv[2]
b = bytearray(open(src, 'rb').read())
u64 = lambda o: struct.unpack_from('<Q', b, o)[0]
u32 = lambda o: struct.unpack_from('<I', b, o)[0]
def p64(o, v): struct.pack_into('<Q', b, o, v)
def p32(o, v): struct.pack_into('<I', b, o, v)
compact = u32(12) & 16 != 0
hs = u64(88); dht = u64(104); dht_sz = u64(112); fht = u64(120); fht_sz = u64(128)
tail = u64(136)
NB = 2047
new_sz = NB * 16
old_end = dht + dht_sz
delta = dht_sz - new_sz
fix = lambda v: v - delta if v >= old_end else v
# walk objects
objs = []
o = hs
end = tail + u64(tail + 8)
while o < end:
    t, size = b[o], u64(o + 8)
    objs.append((o, t, size))
    o += (size + 7) & ~7
datas = []
for (o, t, size) in objs:
    if t == 1:
        datas.append(o)
        for f in (32, 40, 48):
            p64(o + f, fix(u64(o + f)))
        p64(o + 24, 0)
        if compact:
            p32(o + 64, fix(u32(o + 64)))
    elif t == 2:
        for f in (24, 32):
            p64(o + f, fix(u64(o + f)))
    elif t == 3:
        at, step = o + 64, (4 if compact else 16)
        while at + step <= o + size:
            if compact: p32(at, fix(u32(at)))
            else: p64(at, fix(u64(at)))
            at += step
    elif t == 5:
        at = o + 16
        while at + 16 <= o + size:
            p64(at, fix(u64(at))); p64(at + 8, fix(u64(at + 8))); at += 16
    elif t == 6:
        p64(o + 16, fix(u64(o + 16)))
        at, step = o + 24, (4 if compact else 8)
        while at + step <= o + size:
            if compact: p32(at, fix(u32(at)))
            else: p64(at, fix(u64(at)))
            at += step
# rebuild the data hash table
heads = [0] * NB; tails = [0] * NB
for o in datas:
    h = u64(o + 16) % NB
    no = fix(o)
    heads[h] = heads[h] or no
    if tails[h]:
        prev = tails[h] + delta  # old position of the previous chain member
        p64(prev + 24, no)
    tails[h] = no
table = bytearray(new_sz)
for i in range(NB):
    struct.pack_into('<QQ', table, i * 16, heads[i], tails[i])
# header
for f in (136, 176, 264):
    p64(f, fix(u64(f)))
p32(256, fix(u32(256)))
p64(112, new_sz)
out = b[:dht] + table + b[old_end:end]
# the DATA_HASH_TABLE object header's size
struct.pack_into('<Q', out, dht - 16 + 8, new_sz + 16)
struct.pack_into('<Q', out, 96, len(out) - hs)
open(dst, 'wb').write(out)
print(dst, len(out), 'objects', len(objs))
