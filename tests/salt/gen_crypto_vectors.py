"""Write test vectors for beacond's Salt crypto, produced by Salt's own code.

Run with the python of a Salt venv made by tests/salt/setup.sh:

    ~/.cache/beacond/salt/3007/bin/python tests/salt/gen_crypto_vectors.py OUT.json

The Rust test `salt_crypto_vectors` (tests/salt_crypto_vectors.rs) reads every
target/salt-vectors/crypto-*.json and checks beacond's implementation against it:
AES-CBC + HMAC framing (Crypticle.encrypt/decrypt/dumps/loads), RSA-OAEP decryption,
PKCS#1 v1.5 signature verification, the X9.31 token and signature (PrivateKey.encrypt /
PublicKey.decrypt), pem_finger, the exact bytes of a `_minion_event` request as
AsyncReqChannel._package_load + salt.payload.dumps produce them, and a signed `_auth`
reply as the master's ReqServerChannel._auth/_clear_signed builds it.

Random inputs are fresh on every run; only the IV and timestamps are pinned so encrypted
output can be compared byte for byte.
"""

import hashlib
import inspect
import json
import os
import sys
import tempfile
import time
import unittest.mock
import uuid

import salt.channel.client
import salt.crypt
import salt.minion
import salt.payload
import salt.utils.crypt
import salt.version


def h(b):
    if isinstance(b, str):
        b = b.encode()
    return b.hex()


class FixedIV:
    """Pin os.urandom inside salt.crypt for the IV (16 bytes) only."""

    def __init__(self, iv):
        self.iv = iv
        self.real = os.urandom

    def __call__(self, n):
        if n == 16:
            return self.iv
        return self.real(n)


def write_pair(keydir, name):
    # 3008 renamed gen_keys(keydir, name, size) to write_keys; its gen_keys returns strings.
    if hasattr(salt.crypt, "write_keys"):
        salt.crypt.write_keys(keydir, name, 2048)
    else:
        salt.crypt.gen_keys(keydir, name, 2048)


def load_key(cls, path):
    # 3006/3007 construct keys from a path, 3008 from the PEM bytes.
    params = inspect.signature(cls.__init__).parameters
    if "path" in params:
        return cls(path)
    with open(path, "rb") as f:
        return cls(f.read())


def main(out):
    tmp = tempfile.mkdtemp(prefix="beacond-vectors-")
    for name in ("minion", "master", "other"):
        write_pair(tmp, name)
    paths = {n: os.path.join(tmp, n) for n in ("minion", "master", "other")}

    def read(p):
        with open(p) as f:
            return f.read()

    minion_priv = load_key(salt.crypt.PrivateKey, paths["minion"] + ".pem")
    master_priv = load_key(salt.crypt.PrivateKey, paths["master"] + ".pem")
    minion_pub = load_key(salt.crypt.PublicKey, paths["minion"] + ".pub")
    master_pub = load_key(salt.crypt.PublicKey, paths["master"] + ".pub")

    v = {
        "salt_version": salt.version.__version__,
        "minion_pem": read(paths["minion"] + ".pem"),
        "minion_pub": read(paths["minion"] + ".pub"),
        "master_pem": read(paths["master"] + ".pem"),
        "master_pub": read(paths["master"] + ".pub"),
        "other_pub": read(paths["other"] + ".pub"),
    }

    # --- AES-CBC + HMAC-SHA256 framing -------------------------------------------------
    opts = {}
    key = salt.crypt.Crypticle.generate_key_string()
    crypticle = salt.crypt.Crypticle(opts, key)
    iv = os.urandom(16)
    aes = []
    for n in (0, 1, 15, 16, 17, 31, 32, 100, 1000):
        plain = os.urandom(n)
        with unittest.mock.patch("salt.crypt.os.urandom", FixedIV(iv)):
            fixed = crypticle.encrypt(plain)
        random_iv = crypticle.encrypt(plain)
        tampered = bytearray(random_iv)
        tampered[len(tampered) // 2] ^= 0x01
        try:
            crypticle.decrypt(bytes(tampered))
            tamper_error = None
        except salt.crypt.AuthenticationError as exc:
            tamper_error = type(exc).__name__
        aes.append(
            {
                "plain": h(plain),
                "iv": h(iv),
                "cipher_fixed_iv": h(fixed),
                "cipher_random_iv": h(random_iv),
                "tampered": h(bytes(tampered)),
                "tamper_error": tamper_error,
            }
        )
    v["aes_key"] = key
    v["aes"] = aes

    # Crypticle.dumps / loads with and without a nonce.
    obj = {
        "str": "hello",
        "unicode": "h\u00e9llo \u2603",
        "int": 7,
        "neg": -3,
        "big": 2**40,
        "float": 1.5,
        "list": [1, "two", None, True, False],
        "nested": {"a": {"b": []}},
    }
    nonce = uuid.uuid4().hex
    with unittest.mock.patch("salt.crypt.os.urandom", FixedIV(iv)):
        dumped_nonce = crypticle.dumps(obj, nonce=nonce)
        dumped_plain = crypticle.dumps(obj)
        # The master's acknowledgement of `_minion_event`: AESFuncs returns None, and
        # ReqServerChannel sends Crypticle(session).dumps(ret, nonce), packed by the
        # transport with salt.payload.dumps.
        ack = salt.payload.dumps(crypticle.dumps(None, nonce=nonce))
    assert crypticle.loads(dumped_nonce, nonce=nonce) == obj
    v["dumps"] = {
        "obj": obj,
        "nonce": nonce,
        "iv": h(iv),
        "with_nonce": h(dumped_nonce),
        "without_nonce": h(dumped_plain),
        "ack_frame": h(ack),
        "bad_load_frame": h(salt.payload.dumps("bad load")),
    }

    # --- RSA ----------------------------------------------------------------------------
    session = salt.crypt.Crypticle.generate_key_string()
    v["oaep"] = [
        {
            "algo": algo,
            "plain": h(session),
            "cipher": h(minion_pub.encrypt(session, algo)),
        }
        for algo in ("OAEP-SHA1", "OAEP-SHA224")
    ]
    data = os.urandom(300)
    v["sign"] = [
        {
            "algo": algo,
            "data": h(data),
            "sig": h(master_priv.sign(data, algo)),
        }
        for algo in ("PKCS1v15-SHA1", "PKCS1v15-SHA224")
    ]
    digest = hashlib.sha256(key.encode()).hexdigest().encode()
    v["x931"] = {
        "tok": h(minion_priv.encrypt(b"salt")),
        "digest": h(digest),
        "master_sig": h(master_priv.encrypt(digest)),
    }
    assert master_pub.decrypt(bytes.fromhex(v["x931"]["master_sig"])) == digest

    v["finger"] = {
        "sha256_path": salt.utils.crypt.pem_finger(
            path=paths["master"] + ".pub", sum_type="sha256"
        ),
        "sha256_key": salt.utils.crypt.pem_finger(
            key=v["master_pub"], sum_type="sha256"
        ),
        "sha512_path": salt.utils.crypt.pem_finger(
            path=paths["master"] + ".pub", sum_type="sha512"
        ),
    }

    # --- the _minion_event request as salt-minion puts it on the wire -------------------
    minion_id = "vec-minion"
    tok = minion_priv.encrypt(b"salt")
    events = [
        {
            "tag": f"salt/beacon/{minion_id}/inotify//tmp/x",
            "data": {
                "path": "/tmp/x",
                "change": "IN_MODIFY",
                "id": minion_id,
                "_stamp": "2026-01-02T03:04:05.123456",
            },
        },
        {
            "tag": f"salt/beacon/{minion_id}/load/",
            "data": {
                "1m": 0.25,
                "5m": 1.0,
                "15m": 12.5,
                "neg": -40000,
                "count": 300,
                "huge": 2**63,
                "ok": True,
                "none": None,
                "list": ["a", 1, [2, {"b": "\u00fc"}]],
                "id": minion_id,
                "_stamp": "2026-01-02T03:04:05",
            },
        },
    ]

    class FakeMinion:
        def __init__(self):
            self.opts = {"id": minion_id}
            self.tok = tok

    load = salt.minion.Minion._fire_master_prepare(
        FakeMinion(), None, None, events, None
    )

    class FakeAuth:
        session_crypticle = crypticle

        def gen_token(self, clear):
            return minion_priv.encrypt(clear)

    channel = salt.channel.client.AsyncReqChannel.__new__(
        salt.channel.client.AsyncReqChannel
    )
    channel.opts = {
        "id": minion_id,
        "encryption_algorithm": "OAEP-SHA1",
        "signing_algorithm": "PKCS1v15-SHA1",
    }
    channel.auth = FakeAuth()
    ts = 1767322800
    req_nonce = uuid.uuid4().hex
    with unittest.mock.patch("salt.crypt.os.urandom", FixedIV(iv)), unittest.mock.patch(
        "salt.channel.client.time.time", lambda: ts + 0.5
    ):
        try:
            packaged = channel._package_load(
                dict(load), req_nonce, session_crypticle=crypticle
            )
        except TypeError:  # older signature without session_crypticle
            packaged = channel._package_load(dict(load), req_nonce)
    wire = salt.payload.dumps(packaged)
    v["minion_event"] = {
        "id": minion_id,
        "events": events,
        "nonce": req_nonce,
        "ts": ts,
        "iv": h(iv),
        "session_key": key,
        "wire": h(wire),
        "inner_plain": h(
            salt.crypt.Crypticle.PICKLE_PAD + salt.payload.dumps(crypticle.loads(packaged["load"]))
        ),
    }

    # --- a signed _auth reply, as ReqServerChannel._auth + _clear_signed build it -------
    auth = []
    master_aes = salt.crypt.Crypticle.generate_key_string()
    for case in ("first_contact", "with_token", "pending", "rejected"):
        nonce = uuid.uuid4().hex
        if case in ("pending", "rejected"):
            ret = {"ret": case == "pending", "nonce": nonce}
        else:
            aes_b = master_aes.encode()
            ret = {
                "enc": "pub",
                "pub_key": salt.crypt.clean_key(v["master_pub"]),
                "publish_port": 4505,
            }
            token = None
            if case == "with_token":
                token = salt.crypt.Crypticle.generate_key_string().encode()
                # master decrypts the token we sent and re-encrypts it to us
                ret["token"] = minion_pub.encrypt(token, "OAEP-SHA1")
            ret["aes"] = minion_pub.encrypt(aes_b, "OAEP-SHA1")
            ret["session"] = minion_pub.encrypt(session, "OAEP-SHA1")
            digest = hashlib.sha256(aes_b).hexdigest().encode()
            ret["sig"] = master_priv.encrypt(digest)
            ret["nonce"] = nonce
        tosign = salt.payload.dumps(ret)
        reply = {
            "enc": "clear",
            "load": tosign,
            "sig": master_priv.sign(tosign, "PKCS1v15-SHA1"),
        }
        entry = {
            "case": case,
            "nonce": nonce,
            "frame": h(salt.payload.dumps(reply)),
            "aes": master_aes,
            "session": session,
        }
        if case == "with_token":
            entry["token"] = h(token)
        auth.append(entry)
    v["auth"] = auth

    with open(out, "w") as f:
        json.dump(v, f, indent=1)
    print(f"wrote {out} (salt {salt.version.__version__})")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: gen_crypto_vectors.py OUT.json")
    main(sys.argv[1])
