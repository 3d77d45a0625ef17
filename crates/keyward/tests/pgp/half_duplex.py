"""PGP encrypt and decrypt through keyward with Python's requests, which
sends the whole body before it reads the answer. Prints MB/s each way and
"all checks passed"; exits non-zero otherwise.

Environment: KEYWARD_URL, KEYWARD_KEY (a key with pgp:use), PGP_ID (a key
with its private part), SIZE (bytes), DIR (a directory for the files).
"""

import hashlib
import os
import sys
import time

import requests

base, key, pgp_id = os.environ["KEYWARD_URL"], os.environ["KEYWARD_KEY"], os.environ["PGP_ID"]
size, work = int(os.environ["SIZE"]), os.environ["DIR"]
headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/octet-stream"}
plain, sealed, opened = (os.path.join(work, name) for name in ("plain", "plain.pgp", "plain.out"))

block = hashlib.sha256(b"keyward").digest() * (1 << 15)  # 1 MiB
digest = hashlib.sha256()
with open(plain, "wb") as f:
    for i in range(size // len(block)):
        part = i.to_bytes(8, "little") + block[8:]
        f.write(part)
        digest.update(part)


def through(path, action, out):
    started = time.monotonic()
    with open(path, "rb") as body:
        # A file object: requests sends all of it, then reads the answer.
        answer = requests.post(f"{base}/v1/pgp-keys/{pgp_id}/{action}", data=body, headers=headers,
                               stream=True, timeout=60)
        if answer.status_code != 200:
            sys.exit(f"{action}: {answer.status_code} {answer.text[:200]}")
        with open(out, "wb") as f:
            for part in answer.iter_content(1 << 16):
                f.write(part)
    seconds = time.monotonic() - started
    print(f"{action}: {size / 1e6 / seconds:.0f} MB/s ({seconds:.1f} s)")


through(plain, "encrypt", sealed)
if os.path.getsize(sealed) <= size:
    sys.exit("the message is shorter than the file")
through(sealed, "decrypt", opened)
check = hashlib.sha256()
with open(opened, "rb") as f:
    for part in iter(lambda: f.read(1 << 20), b""):
        check.update(part)
if check.digest() != digest.digest():
    sys.exit("the decrypted file is not the file")
print("all checks passed")
