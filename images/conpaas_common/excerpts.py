"""What an error quotes of a log: its last lines, those that say why. The agent quotes an instance
that exited at start, the control plane the logs of an instance whose deploy failed; both cut
the same way, so a program's own error (a Python or Java exception, a PHP fatal error) stays in
the last lines instead of being pushed out by stack frames, by every health check logging the
same error, or by a supervisor's traceback after it (gunicorn's master after its worker's).
Standard library only."""

import re

DIGITS = re.compile(r"\d+")
JAVA_FRAME = re.compile(r"^\s+at \S")  # "\tat org.example.Main.run(Main.java:3)"
PYTHON_FRAME = re.compile(r'^\s+File "[^"]*", line \d+')  # '  File "/app/wsgi.py", line 3, in <module>'
PYTHON_SOURCE = "    "  # a frame's source line follows it, indented by 4
PYTHON_MARKERS = re.compile(r"^\s*[\^~]+\s*$")  # Python 3.11's "    ^^^^^^^^" under the source
FRAMES_SHOWN = 3  # of each run of stack frames


def excerpt(lines: list[str], count: int) -> list[str]:
    """The last `count` lines that say why: repeats left out and stack frames cut short."""
    return shorten_stacks(last_of_repeats(lines))[-count:]


def last_of_repeats(lines: list[str]) -> list[str]:
    """Each line but those repeated later with other numbers only (a time, a request's or a
    process's number): every health check logs the same error, and once says it."""
    seen, kept = set(), []
    for line in reversed(lines):
        key = DIGITS.sub("#", line)
        if key not in seen:
            seen.add(key)
            kept.append(line)
    return kept[::-1]


def shorten_stacks(lines: list[str]) -> list[str]:
    """Each run of stack frames cut to FRAMES_SHOWN frames and a count of the others. Java prints
    the innermost frame first, under the exception's message: its first frames are kept. Python
    prints it last, above the exception's line: its last frames are kept, each with its source
    line (without 3.11's ^^^ markers, which point at columns no excerpt keeps)."""
    out: list[str] = []
    frames: list[list[str]] = []  # the current run, each frame its lines
    java = False

    def end_run() -> None:
        hidden = len(frames) - FRAMES_SHOWN
        if hidden <= 0:
            shown = frames
        elif java:
            shown = [*frames[:FRAMES_SHOWN], [f"\t… {hidden} more frames"]]
        else:
            shown = [[f"  … {hidden} more frames"], *frames[-FRAMES_SHOWN:]]
        out.extend(line for frame in shown for line in frame)
        frames.clear()

    for line in lines:
        python_frame = PYTHON_FRAME.match(line)
        if not python_frame and frames and not java and line.startswith(PYTHON_SOURCE):
            if not PYTHON_MARKERS.match(line):
                frames[-1].append(line)
        elif python_frame or JAVA_FRAME.match(line):
            if frames and java == bool(python_frame):
                end_run()
            java = not python_frame
            frames.append([line])
        else:
            end_run()
            out.append(line)
    end_run()
    return out
