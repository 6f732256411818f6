"""Package the app into its CloudFormation (SAM) template offline, the way CI does.

    python tests/deploy/chalice_package.py --stage dev --out build/ci/dev

`chalice package` builds the deployment zip from `requirements.txt` with pip, which needs
the package index. The template does not depend on the dependencies, so CI packages a
copy of the project without `requirements.txt`: nothing is downloaded, and with fake
credentials, no profile and an endpoint that refuses connections, nothing reaches AWS
either. `make package` builds the real zip for a deployment.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MERGE_TEMPLATE = ".chalice/resources.yaml"
TEMPLATE_NAME = "sam.yaml"  # a YAML merge template makes chalice write YAML

OFFLINE_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    "AWS_EC2_METADATA_DISABLED": "true",
    # Any AWS call or download would go here and fail at once.
    "AWS_ENDPOINT_URL": "http://127.0.0.1:9",
    "HTTP_PROXY": "http://127.0.0.1:9",
    "HTTPS_PROXY": "http://127.0.0.1:9",
    "PIP_NO_INDEX": "1",
}


def chalice_command() -> str:
    return str(Path(sys.executable).with_name("chalice"))


def package(stage: str, out: Path, root: Path = ROOT) -> Path:
    """Run `chalice package --merge-template` on a copy of the app; return the template's path."""
    with tempfile.TemporaryDirectory(prefix="chalice-package-") as tmp:
        project = Path(tmp) / "app"
        (project / ".chalice").mkdir(parents=True)
        shutil.copy2(root / "app.py", project / "app.py")
        shutil.copytree(root / "chalicelib", project / "chalicelib", ignore=shutil.ignore_patterns("__pycache__"))
        for source in (root / ".chalice").glob("*.json"):
            shutil.copy2(source, project / ".chalice" / source.name)
        shutil.copy2(root / MERGE_TEMPLATE, project / MERGE_TEMPLATE)
        env = {key: value for key, value in os.environ.items() if not key.startswith("AWS_")}
        env.update(OFFLINE_ENV)
        out = out.resolve()
        if out.exists():
            shutil.rmtree(out)
        done = subprocess.run(
            [chalice_command(), "package", "--stage", stage, "--merge-template", MERGE_TEMPLATE, str(out)],
            cwd=project,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        if done.returncode != 0:
            raise RuntimeError(f"chalice package failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return out / TEMPLATE_NAME


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stage", default="dev")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    print(package(args.stage, args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
