"""Upload benchmark: the agent's part sender against boto3's upload_file, both to moto S3 in server mode.

    .venv/bin/python -m sim.bench_upload [--size-mib 1024] [--part-size-mib 8] [--concurrency 4] [--repeat 1]

One file of random bytes is uploaded to a bucket in a moto server on loopback:
- boto3: `upload_file` with its default transfer settings, and with the agent's part size and concurrency;
- agent: the file is hashed in one pass (`hash_file`, as the uploader does before declaring a session), then its
  parts are PUT to presigned `upload_part` URLs with `PartSender`, the code the uploader sends parts with. The
  URLs are presigned here with boto3 (the control plane's job), and the upload is completed here too.
Each upload runs in a child process that imports what its real process would (the agent imports boto3 too), so
its peak RSS (VmHWM) is its own. Every upload is checked: the object's size and its multipart ETag.
moto keeps objects in memory, so the bucket is emptied between runs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Any

MIB = 1 << 20
BUCKET = "bench-recordings"


@dataclass(frozen=True)
class Row:
    name: str
    seconds: float
    size: int
    peak_rss_mib: float
    baseline_rss_mib: float
    note: str

    @property
    def mib_per_second(self) -> float:
        return self.size / MIB / self.seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--part-size-mib", type=int, default=8)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--child", choices=["agent", "boto3"], help=argparse.SUPPRESS)
    parser.add_argument("--job", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return _child(args.child, args.job)
    return _bench(args.size_mib * MIB, args.part_size_mib * MIB, args.concurrency, args.repeat)


def _bench(size: int, part_size: int, concurrency: int, repeat: int) -> int:
    from sim.aws import MotoServer, use_fake_credentials

    use_fake_credentials()
    server = MotoServer().start()
    rows: list[Row] = []
    try:
        with tempfile.TemporaryDirectory(prefix="bench-upload-") as work:
            path = os.path.join(work, "room_2026-11-24-10-00-00.mp4")
            _write_random(path, size)
            for _ in range(repeat):
                rows.append(_run_boto3(server.url, path, size, None, None))
                rows.append(_run_boto3(server.url, path, size, part_size, concurrency))
                rows.append(_run_agent(server.url, path, size, part_size, concurrency, work))
    finally:
        server.stop()
    _print(rows, size, part_size, concurrency)
    return 0


def _write_random(path: str, size: int) -> None:
    with open(path, "wb") as handle:
        left = size
        while left:
            chunk = os.urandom(min(left, 8 * MIB))
            handle.write(chunk)
            left -= len(chunk)


def _client(endpoint: str) -> Any:
    import boto3

    return boto3.client("s3", region_name="us-east-1", endpoint_url=endpoint)


def _fresh_bucket(endpoint: str) -> Any:
    s3 = _client(endpoint)
    try:
        objects = s3.list_objects_v2(Bucket=BUCKET).get("Contents", [])
        for item in objects:
            s3.delete_object(Bucket=BUCKET, Key=item["Key"])
        for upload in s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", []):
            s3.abort_multipart_upload(Bucket=BUCKET, Key=upload["Key"], UploadId=upload["UploadId"])
    except s3.exceptions.NoSuchBucket:
        s3.create_bucket(Bucket=BUCKET)
    return s3


def _run_boto3(endpoint: str, path: str, size: int, part_size: int | None, concurrency: int | None) -> Row:
    s3 = _fresh_bucket(endpoint)
    key = "boto3/" + os.path.basename(path)
    job = {"endpoint": endpoint, "path": path, "key": key, "part_size": part_size, "concurrency": concurrency}
    result = _spawn("boto3", job)
    head = s3.head_object(Bucket=BUCKET, Key=key)
    if head["ContentLength"] != size:
        raise SystemExit(f"boto3 upload is {head['ContentLength']} bytes, not {size}")
    note = "defaults (8 MiB, 10 threads)" if part_size is None else f"{part_size // MIB} MiB, {concurrency} threads"
    return Row("boto3 upload_file", result["seconds"], size, result["peak_rss_mib"], result["baseline_rss_mib"], note)


def _run_agent(endpoint: str, path: str, size: int, part_size: int, concurrency: int, work: str) -> Row:
    from agent.uploader import part_count, part_range

    s3 = _fresh_bucket(endpoint)
    key = "agent/" + os.path.basename(path)
    upload_id = s3.create_multipart_upload(Bucket=BUCKET, Key=key)["UploadId"]
    parts = []
    for number in range(1, part_count(size, part_size) + 1):
        offset, length = part_range(number, part_size, size)
        url = s3.generate_presigned_url(
            "upload_part",
            Params={"Bucket": BUCKET, "Key": key, "UploadId": upload_id, "PartNumber": number},
            ExpiresIn=3600,
        )
        parts.append({"number": number, "offset": offset, "length": length, "url": url})
    job = {"path": path, "part_size": part_size, "concurrency": concurrency, "parts": parts}
    result = _spawn("agent", job, work)
    etags = result["etags"]
    s3.complete_multipart_upload(
        Bucket=BUCKET,
        Key=key,
        UploadId=upload_id,
        MultipartUpload={"Parts": [{"PartNumber": n, "ETag": etags[str(n)]} for n in range(1, len(parts) + 1)]},
    )
    head = s3.head_object(Bucket=BUCKET, Key=key)
    expected = hashlib.md5(b"".join(bytes.fromhex(m) for m in result["md5s"])).hexdigest() + f"-{len(parts)}"
    if head["ContentLength"] != size or head["ETag"].strip('"') != expected:
        raise SystemExit(f"agent upload is wrong: {head['ContentLength']} bytes, ETag {head['ETag']} != {expected}")
    note = f"{part_size // MIB} MiB, {concurrency} threads; hashing {result['hash_seconds']:.1f} s + PUTs"
    return Row(
        "agent hash + PartSender", result["seconds"], size, result["peak_rss_mib"], result["baseline_rss_mib"], note
    )


def _spawn(kind: str, job: dict[str, Any], work: str | None = None) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile("w", suffix=".json", dir=work, delete=False) as handle:
        json.dump(job, handle)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "sim.bench_upload", "--child", kind, "--job", handle.name],
            capture_output=True,
            text=True,
            check=False,
            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        )
    finally:
        os.unlink(handle.name)
    if done.returncode != 0:
        raise SystemExit(f"{kind} upload failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _rss_mib() -> float:
    """This process's peak RSS. VmHWM belongs to the process's own memory map; ru_maxrss on Linux survives
    fork and exec, so a child of the parent holding moto's objects would report the parent's peak."""
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _child(kind: str, job_path: str | None) -> int:
    assert job_path is not None
    with open(job_path, encoding="utf-8") as handle:
        job = json.load(handle)
    if kind == "boto3":
        from boto3.s3.transfer import TransferConfig

        from sim.aws import use_fake_credentials

        use_fake_credentials()
        s3 = _client(job["endpoint"])
        settings = {}
        if job["part_size"]:
            settings = {"multipart_chunksize": job["part_size"], "max_concurrency": job["concurrency"]}
        config = TransferConfig(**settings)
        baseline = _rss_mib()
        started = time.perf_counter()
        s3.upload_file(job["path"], BUCKET, job["key"], Config=config)
        seconds = time.perf_counter() - started
        print(json.dumps({"seconds": seconds, "peak_rss_mib": _rss_mib(), "baseline_rss_mib": baseline}))
        return 0
    import boto3

    import agent.agent  # noqa: F401  (the agent's process holds all of it: a fair baseline)
    from agent.uploader import PartJob, PartSender, hash_file

    # The running agent also holds an Auto Scaling client, whose service model is most of its memory.
    boto3.client("autoscaling", region_name="us-east-1", endpoint_url="http://127.0.0.1:9")
    baseline = _rss_mib()
    started = time.perf_counter()
    digest = hash_file(job["path"], job["part_size"])
    hashed = time.perf_counter()
    headers = {"Content-Type": "application/octet-stream"}
    jobs = [
        PartJob(digest.name, p["number"], job["path"], p["offset"], p["length"], p["url"], headers)
        for p in job["parts"]
    ]
    sender = PartSender(job["concurrency"], timeout=120)
    etags: dict[str, str] = {}
    # In batches of 100 URLs, as the control plane hands them out.
    for first in range(0, len(jobs), 100):
        for result in sender.send(jobs[first : first + 100]):
            if not result.ok or result.etag is None:
                raise SystemExit(result.error)
            etags[str(result.job.number)] = result.etag
    seconds = time.perf_counter() - started
    print(
        json.dumps(
            {
                "seconds": seconds,
                "hash_seconds": hashed - started,
                "peak_rss_mib": _rss_mib(),
                "baseline_rss_mib": baseline,
                "etags": etags,
                "md5s": [p.md5 for p in digest.parts],
            }
        )
    )
    return 0


def _print(rows: list[Row], size: int, part_size: int, concurrency: int) -> None:
    print(f"{size // MIB} MiB file to moto S3 (server mode, loopback); agent part size {part_size // MIB} MiB")
    header = f"{'uploader':<26} {'wall s':>7} {'MiB/s':>7} {'peak RSS MiB':>13} {'RSS before MiB':>15}  settings"
    print(header)
    print("-" * len(header))
    for row in rows:
        print(
            f"{row.name:<26} {row.seconds:>7.1f} {row.mib_per_second:>7.1f} {row.peak_rss_mib:>13.1f} "
            f"{row.baseline_rss_mib:>15.1f}  {row.note}"
        )


if __name__ == "__main__":
    sys.exit(main())
