"""The recordings bucket through boto3: multipart uploads, presigned URLs, the manifest."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

from botocore.exceptions import ClientError

from chalicelib.recordings import HeldPart, RecordingSettings, UploadGone

_GONE = {"NoSuchUpload", "NoSuchKey", "404"}


class S3Storage:
    """`client` must sign with SigV4 (presigned URLs carry the part's checksum as a signed header)."""

    def __init__(self, client: Any, settings: RecordingSettings) -> None:
        assert settings.bucket, "S3Storage needs a bucket"
        self._s3 = client
        self._bucket: str = settings.bucket
        self._settings = settings

    def _encryption(self) -> dict[str, str]:
        params = {"ServerSideEncryption": self._settings.sse}
        if self._settings.sse == "aws:kms" and self._settings.kms_key_id:
            params["SSEKMSKeyId"] = self._settings.kms_key_id
        return params

    def create_upload(self, key: str, content_type: str) -> str:
        params: dict[str, Any] = {
            "Bucket": self._bucket,
            "Key": key,
            "ContentType": content_type,
            "StorageClass": self._settings.storage_class,
            "ChecksumAlgorithm": "SHA256",
            **self._encryption(),
        }
        if self._settings.tags:
            params["Tagging"] = urlencode(self._settings.tags)
        return str(self._s3.create_multipart_upload(**params)["UploadId"])

    def held_parts(self, key: str, upload_id: str) -> list[HeldPart]:
        held: list[HeldPart] = []
        marker = 0
        while True:
            try:
                page = self._s3.list_parts(Bucket=self._bucket, Key=key, UploadId=upload_id, PartNumberMarker=marker)
            except ClientError as error:
                if error.response["Error"]["Code"] in _GONE:
                    raise UploadGone(key) from None
                raise
            for part in page.get("Parts", []):
                held.append(
                    HeldPart(int(part["PartNumber"]), int(part["Size"]), part["ETag"], part.get("ChecksumSHA256"))
                )
            if not page.get("IsTruncated"):
                return held
            marker = int(page["NextPartNumberMarker"])

    def presign_part(self, key: str, upload_id: str, number: int, sha256_b64: str, expires: int) -> str:
        params = {"Bucket": self._bucket, "Key": key, "UploadId": upload_id, "PartNumber": number}
        params["ChecksumSHA256"] = sha256_b64
        return str(self._s3.generate_presigned_url("upload_part", Params=params, ExpiresIn=expires))

    def complete_upload(self, key: str, upload_id: str, parts: list[tuple[int, str, str]]) -> str:
        listed = [{"PartNumber": n, "ETag": etag, "ChecksumSHA256": checksum} for n, etag, checksum in parts]
        try:
            answer = self._s3.complete_multipart_upload(
                Bucket=self._bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": listed}
            )
        except ClientError as error:
            if error.response["Error"]["Code"] in _GONE:
                raise UploadGone(key) from None
            raise
        return str(answer.get("ETag", ""))

    def abort_upload(self, key: str, upload_id: str) -> None:
        try:
            self._s3.abort_multipart_upload(Bucket=self._bucket, Key=key, UploadId=upload_id)
        except ClientError as error:
            if error.response["Error"]["Code"] not in _GONE:
                raise

    def object_size_and_etag(self, key: str) -> tuple[int, str] | None:
        try:
            head = self._s3.head_object(Bucket=self._bucket, Key=key)
        except ClientError as error:
            if error.response["Error"]["Code"] in _GONE:
                return None
            raise
        return int(head["ContentLength"]), str(head.get("ETag", ""))

    def put_json(self, key: str, document: Mapping[str, Any]) -> None:
        self._s3.put_object(
            Bucket=self._bucket,
            Key=key,
            Body=json.dumps(document, indent=2).encode(),
            ContentType="application/json",
            StorageClass=self._settings.storage_class,
            **self._encryption(),
        )

    def presign_download(self, key: str, expires: int) -> str:
        params = {"Bucket": self._bucket, "Key": key}
        return str(self._s3.generate_presigned_url("get_object", Params=params, ExpiresIn=expires))
