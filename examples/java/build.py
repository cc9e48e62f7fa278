"""Build hello.war from src/ (a WAR is a zip with WEB-INF/): `python3 examples/java/build.py`.

No compiler and no internet needed: the page is a JSP, which Tomcat compiles on the node. The
.war is checked in next to this script; entries carry a fixed time, so a rebuild of the same
sources gives the same bytes (the same sha256: the same code version). `conpaas push SERVICE
examples/java` uploads hello.war as it is: .conpaasignore leaves out the rest of this folder."""

import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent


def build(source: Path = HERE / "src", war: Path = HERE / "hello.war") -> Path:
    with zipfile.ZipFile(war, "w", zipfile.ZIP_DEFLATED) as out:
        for path in sorted(p for p in source.rglob("*") if p.is_file()):
            entry = zipfile.ZipInfo(path.relative_to(source).as_posix(), date_time=(2024, 1, 1, 0, 0, 0))
            entry.compress_type = zipfile.ZIP_DEFLATED
            entry.external_attr = 0o644 << 16
            out.writestr(entry, path.read_bytes())
    return war


if __name__ == "__main__":
    print(build())
