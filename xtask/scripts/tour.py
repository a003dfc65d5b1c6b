#!/usr/bin/env python3
"""Runs README.md's shell examples against a real hub: `cargo xtask ci`'s `tour` step.

    python3 xtask/scripts/tour.py --cli target/debug/link-cli --readme README.md

README.md is the source of truth. The script reads two of its code blocks:

* the ```sh block of "A 5-minute tour". Its set of commands must be exactly
  the set this script knows how to run (TOUR below), so a command added to,
  changed in or dropped from the README fails the step until both agree.
  Each command runs as written, with `link-cli` being the binary under test,
  against a hub this script starts, and the outputs the README shows in its
  comments are compared exactly (the pids in `link-cli-<pid>` kinds become
  the real pids). Three substitutions, because a test cannot do otherwise:
  - `link-cli hub` runs as `link-cli hub --bind 127.0.0.1:0` (no fixed port),
    and every other command gets the real address in LINK_URL and the
    generated secret in LINK_SECRET (the `export LINK_SECRET=…` lines);
  - `| jq .payload` is done here (jq is not on every CI machine);
  - the "terminals" are processes: the plain `subscribe` gets a pseudo-
    terminal as stdout, as in the README, so its human line can be compared.
* the ```console block of "link-cli: offline commands": every `$ command`
  runs with bash in a scratch directory, stdout and stderr merged, and must
  print exactly the lines shown under it. `frames.jsonl` is written first
  from the block's own frames (the signed one, the tampered one, and a line
  that is not JSON).

Everything listens on 127.0.0.1 only, every wait is bounded, and every
process started here is stopped before the script exits (the hub with
SIGTERM, which must exit 0 as the README says). Exit status: 0 when
everything matched, 1 with a message naming the command otherwise.
"""

import argparse
import json
import os
import pty
import queue
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time

# How long any one command or awaited line may take.
STEP_TIMEOUT = 30.0
# The whole tour (an alarm makes sure the cleanup runs even if a wait hangs).
TOUR_TIMEOUT = 240

# The commands of the tour block, as README.md writes them (comments cut).
HUB = "link-cli hub"
EXPORT_SECRET = "export LINK_SECRET=9a83bd…"
SUBSCRIBE = "link-cli subscribe news"
PUBLISH = "link-cli publish news '{\"headline\": \"hello\"}'"
PEERS = "link-cli peers"
TOPICS = "link-cli topics"
HEALTH = "link-cli rpc server link.health"
GHOST = "link-cli rpc ghost ping; echo $?"
LISTEN = "link-cli listen --kind inbox"
SEND = "link-cli send inbox greet '{\"text\": \"hi\"}'"
SCRIPTED = "link-cli subscribe news --count 1 | jq .payload"
TOUR = {HUB, EXPORT_SECRET, SUBSCRIBE, PUBLISH, PEERS, TOPICS, HEALTH, GHOST, LISTEN, SEND, SCRIPTED}


class TourError(Exception):
    """A documented behaviour that did not hold."""


def fail(message):
    raise TourError(message)


# ----- README parsing -------------------------------------------------------


def section_block(readme, heading, lang):
    """The lines of the first ```lang block after `heading`."""
    lines = readme.splitlines()
    try:
        start = lines.index(heading)
    except ValueError:
        fail(f"README.md has no heading {heading!r}")
    fence = "```" + lang
    for i in range(start + 1, len(lines)):
        if lines[i].startswith("## "):
            break
        if lines[i].strip() == fence:
            end = lines.index("```", i + 1)
            return lines[i + 1 : end]
    fail(f"README.md: no ```{lang} block under {heading!r}")


def split_comment(line):
    """`command  # comment` -> (command, comment); a `#` inside quotes stays."""
    quote = None
    for i, ch in enumerate(line):
        if quote:
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1] == " "):
            return line[:i].rstrip(), line[i + 1 :].strip()
    return line.rstrip(), None


def tour_commands(block):
    """{command: [documented lines]} for the tour's sh block.

    A documented line is the comment on the command's own line, or a
    `#   output` line (a comment indented by three spaces) under it.
    """
    commands = {}
    last = None
    for raw in block:
        line = raw.strip()
        if not line:
            continue
        if line.startswith("#   ") and last is not None:
            commands[last].append(line[4:])
            continue
        if line.startswith("#"):
            last = None
            continue
        command, comment = split_comment(line)
        commands.setdefault(command, [])
        if comment:
            commands[command].append(comment)
        last = command
    return commands


def console_examples(block):
    """[(command, [expected lines])] for a ```console block of `$ ` prompts."""
    examples = []
    i = 0
    while i < len(block):
        line = block[i]
        i += 1
        if not line.startswith("$ "):
            if line.strip():
                fail(f"README.md console block: output line without a command: {line!r}")
            continue
        command = line[2:]
        while command.endswith("\\") and i < len(block):
            command += "\n" + block[i]  # bash joins `\` + newline
            i += 1
        output = []
        while i < len(block) and block[i].strip() and not block[i].startswith("$ "):
            output.append(block[i])
            i += 1
        examples.append((command, output))
    return examples


# ----- processes --------------------------------------------------------------


class Lines:
    """Lines read by a thread from a file descriptor, awaited with a timeout."""

    def __init__(self, fd, name):
        self.name = name
        self.queue = queue.Queue()
        self.seen = []
        self.thread = threading.Thread(target=self._read, args=(fd,), daemon=True)
        self.thread.start()

    def _read(self, fd):
        pending = b""
        while True:
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # EIO: the pseudo-terminal's other side closed
                chunk = b""
            if not chunk:
                break
            pending += chunk
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                self.queue.put(line.decode("utf-8", "replace").rstrip("\r"))
        if pending:
            self.queue.put(pending.decode("utf-8", "replace").rstrip("\r"))
        self.queue.put(None)
        os.close(fd)

    def next(self, what):
        try:
            line = self.queue.get(timeout=STEP_TIMEOUT)
        except queue.Empty:
            fail(f"{self.name}: no line within {STEP_TIMEOUT:.0f} s ({what}); saw {self.seen}")
        if line is None:
            self.queue.put(None)
            fail(f"{self.name}: output ended before {what}; saw {self.seen}")
        self.seen.append(line)
        return line

    def rest(self):
        """Every remaining line, once the writer has exited."""
        self.thread.join(STEP_TIMEOUT)
        lines = []
        while True:
            try:
                line = self.queue.get_nowait()
            except queue.Empty:
                return lines
            if line is None:
                return lines
            lines.append(line)


class Tour:
    def __init__(self, cli, env):
        self.cli = cli
        self.env = env
        self.background = []
        # stderr of the background commands (the hub's logs among them),
        # shown when the tour fails.
        self.logs = tempfile.TemporaryDirectory(prefix="link-tour-logs-")
        self.log_files = []

    def argv(self, command):
        args = shlex.split(command)
        if args[0] != "link-cli":
            fail(f"not a link-cli command: {command!r}")
        return [self.cli] + args[1:]

    def spawn(self, command, argv=None, tty=False):
        """Starts a background command: (process, stdout lines)."""
        argv = argv or self.argv(command)
        log_path = os.path.join(self.logs.name, f"{len(self.log_files)}.stderr")
        log = open(log_path, "wb")
        self.log_files.append((command, log_path))
        if tty:
            master, slave = pty.openpty()
            proc = subprocess.Popen(
                argv, env=self.env, stdin=subprocess.DEVNULL, stdout=slave,
                stderr=log, start_new_session=True,
            )
            os.close(slave)
            out = Lines(master, command)
        else:
            proc = subprocess.Popen(
                argv, env=self.env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                stderr=log, start_new_session=True,
            )
            out = Lines(os.dup(proc.stdout.fileno()), command)
            proc.stdout.close()
        log.close()
        self.background.append(proc)
        print(f"  started `{command}` (pid {proc.pid})", flush=True)
        return proc, out

    def run(self, command, expect_status=0):
        """Runs a foreground command: (pid, stdout, stderr)."""
        proc = subprocess.Popen(
            self.argv(command), env=self.env, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        try:
            stdout, stderr = proc.communicate(timeout=STEP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            fail(f"`{command}` did not finish within {STEP_TIMEOUT:.0f} s")
        if proc.returncode != expect_status:
            fail(f"`{command}` exited {proc.returncode}, expected {expect_status}\n"
                 f"stdout: {stdout}\nstderr: {stderr}")
        return proc.pid, stdout, stderr

    def run_on_tty(self, command):
        """Runs a foreground command with a pseudo-terminal as stdout, as in a
        terminal: (pid, exit status, stdout lines, stderr)."""
        master, slave = pty.openpty()
        proc = subprocess.Popen(
            self.argv(command), env=self.env, stdin=subprocess.DEVNULL, stdout=slave,
            stderr=subprocess.PIPE, text=True,
        )
        os.close(slave)
        out = Lines(master, command)
        try:
            _, stderr = proc.communicate(timeout=STEP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            fail(f"`{command}` did not finish within {STEP_TIMEOUT:.0f} s")
        return proc.pid, proc.returncode, out.rest(), stderr

    def json_of(self, command):
        _, stdout, _ = self.run(command)
        try:
            return json.loads(stdout)
        except json.JSONDecodeError as e:
            fail(f"`{command}` printed no JSON ({e}): {stdout!r}")

    def wait_until(self, what, check):
        """Re-runs `check` (which runs a README command) until it is true."""
        deadline = time.monotonic() + STEP_TIMEOUT
        while not check():
            if time.monotonic() > deadline:
                fail(f"{what} did not happen within {STEP_TIMEOUT:.0f} s")
            time.sleep(0.05)

    def stop(self, proc, command):
        """Ctrl-C (SIGINT) a background command; it must exit 0."""
        proc.send_signal(signal.SIGINT)
        try:
            status = proc.wait(timeout=STEP_TIMEOUT)
        except subprocess.TimeoutExpired:
            fail(f"`{command}` did not exit within {STEP_TIMEOUT:.0f} s of Ctrl-C")
        if status != 0:
            fail(f"`{command}` exited {status} after Ctrl-C, expected 0")

    def show_logs(self):
        for command, path in self.log_files:
            with open(path, encoding="utf-8", errors="replace") as f:
                tail = f.read().splitlines()[-20:]
            print(f"--- stderr of `{command}` (last {len(tail)} lines)", file=sys.stderr)
            for line in tail:
                print(f"    {line}", file=sys.stderr)

    def cleanup(self):
        for proc in self.background:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        self.logs.cleanup()


def with_pid(documented, pid):
    """The documented line with its `link-cli-<pid>` kind made `link-cli-<pid>`."""
    kinds = re.findall(r"link-cli-(\d+)", documented)
    if len(kinds) != 1:
        fail(f"expected one link-cli-<pid> kind in the README line {documented!r}")
    return documented.replace(f"link-cli-{kinds[0]}", f"link-cli-{pid}")


def expect_equal(what, actual, expected):
    if actual != expected:
        fail(f"{what}:\n  README: {expected!r}\n  actual: {actual!r}")
    print(f"  ok: {what}: {actual}", flush=True)


# ----- the tour ----------------------------------------------------------------


def online_tour(tour, readme):
    commands = tour_commands(section_block(readme, "## A 5-minute tour", "sh"))
    if set(commands) != TOUR:
        fail("README.md's tour and xtask/scripts/tour.py disagree:\n"
             f"  only in README.md: {sorted(set(commands) - TOUR)}\n"
             f"  only in tour.py:   {sorted(TOUR - set(commands))}")
    print(f"  the tour block has the {len(TOUR)} commands this script runs", flush=True)

    # Terminal 1: the hub, on a free port (README: `link-cli hub` on 8080).
    hub_doc = commands[HUB]
    if len(hub_doc) != 2 or not hub_doc[0].startswith("LINK_SECRET=") \
            or not hub_doc[1].startswith("listening=ws://127.0.0.1:"):
        fail(f"README: unexpected documented hub output {hub_doc}")
    hub_argv = tour.argv(HUB) + ["--bind", "127.0.0.1:0"]
    hub, hub_out = tour.spawn(HUB + " --bind 127.0.0.1:0", argv=hub_argv)
    secret_line = hub_out.next("the generated secret")
    if not re.fullmatch(r"LINK_SECRET=[0-9a-f]{64}", secret_line):
        fail(f"hub: first line is not LINK_SECRET=<64 hex digits>: {secret_line!r}")
    listening = hub_out.next("the address")
    match = re.fullmatch(r"listening=(ws://127\.0\.0\.1:\d+)", listening)
    if not match:
        fail(f"hub: second line is not listening=ws://127.0.0.1:<port>: {listening!r}")
    print(f"  ok: hub printed LINK_SECRET=<64 hex> then {listening}", flush=True)
    tour.env["LINK_URL"] = match.group(1)
    # EXPORT_SECRET: "the value printed by the hub".
    tour.env["LINK_SECRET"] = secret_line.split("=", 1)[1]

    # Terminal 2: subscribe, on a terminal.
    subscriber, sub_lines = tour.spawn(SUBSCRIBE, tty=True)

    def news_subscribers():
        topics = tour.json_of(TOPICS)["topics"]
        return [s for t in topics if t["topic"] == "news" for s in t["subscribers"]]

    tour.wait_until("the subscriber's topic.subscribe", lambda: news_subscribers() != [])

    # Terminal 3: publish, look around, call RPCs.
    publisher, _, _ = tour.run(PUBLISH)
    expect_equal(SUBSCRIBE, sub_lines.next("the published message"),
                 with_pid(commands[SUBSCRIBE][0], publisher))

    peers_pid, stdout, _ = tour.run(PEERS)
    kinds = [p["kind"] for p in json.loads(stdout)]
    for kind in (f"link-cli-{peers_pid}", f"link-cli-{subscriber.pid}"):
        if kind not in kinds:
            fail(f"`{PEERS}` does not list {kind}: {stdout!r}")
    print(f"  ok: {PEERS} lists itself and the subscriber: {kinds}", flush=True)

    _, stdout, _ = tour.run(TOPICS)
    expect_equal(TOPICS, stdout.rstrip("\n"), with_pid(commands[TOPICS][0], subscriber.pid))

    _, stdout, _ = tour.run(HEALTH)
    if not isinstance(json.loads(stdout), dict):
        fail(f"`{HEALTH}` did not print a JSON object: {stdout!r}")
    print(f"  ok: {HEALTH} printed a JSON object", flush=True)

    ghost_doc = commands[GHOST][0]
    message, _, status = ghost_doc.rpartition(" → ")
    ghost = subprocess.run(["bash", "-c", GHOST], env=tour.env, stdin=subprocess.DEVNULL,
                           capture_output=True, text=True, timeout=STEP_TIMEOUT)
    expect_equal(f"{GHOST} (stdout)", ghost.stdout.strip(), status)
    expect_equal(f"{GHOST} (stderr)", ghost.stderr.strip(), message)

    # Direct messages: a listener with a known kind, and a sender.
    listener, listen_lines = tour.spawn(LISTEN)

    def inbox_listed():
        return any(p["kind"] == "inbox" for p in tour.json_of(PEERS))

    tour.wait_until("the inbox listener joining", inbox_listed)
    # The wording of send's confirmation is not part of the README: only
    # its exit status, that it said something, and the delivery are checked.
    sender, status, printed, stderr = tour.run_on_tty(SEND)
    if status != 0 or not (printed or stderr.strip()):
        fail(f"`{SEND}` exited {status} and printed {printed!r} / {stderr!r}")
    print(f"  ok: {SEND} exited 0 and printed {printed or stderr.strip()!r}", flush=True)
    direct = json.loads(listen_lines.next("the direct message"))
    expect_equal(LISTEN, direct, {"from": f"link-cli-{sender}", "type": "greet",
                                  "data": {"text": "hi"}})
    tour.stop(listener, LISTEN)

    # Scripting: JSON lines when piped, exit after N messages.
    scripted_command, _, filt = SCRIPTED.partition(" | ")
    if filt != "jq .payload":
        fail(f"unexpected filter in {SCRIPTED!r}")
    scripted, scripted_lines = tour.spawn(scripted_command)
    tour.wait_until("the second news subscriber",
                    lambda: f"link-cli-{scripted.pid}" in news_subscribers())
    publisher, _, _ = tour.run(PUBLISH)
    line = json.loads(scripted_lines.next("the published message"))
    expect_equal(f"{SCRIPTED} (jq .payload)", line.get("payload"), {"headline": "hello"})
    try:
        status = scripted.wait(timeout=STEP_TIMEOUT)
    except subprocess.TimeoutExpired:
        fail(f"`{scripted_command}` did not exit after its one message")
    if status != 0:
        fail(f"`{scripted_command}` exited {status}, expected 0")
    expect_equal(SUBSCRIBE, sub_lines.next("the second message"),
                 with_pid(commands[SUBSCRIBE][0], publisher))
    tour.stop(subscriber, SUBSCRIBE)

    # README: SIGTERM closes every peer and exits 0.
    hub.send_signal(signal.SIGTERM)
    try:
        status = hub.wait(timeout=STEP_TIMEOUT)
    except subprocess.TimeoutExpired:
        fail(f"the hub did not exit within {STEP_TIMEOUT:.0f} s of SIGTERM")
    if status != 0:
        fail(f"the hub exited {status} after SIGTERM, expected 0")
    print("  ok: the hub exited 0 on SIGTERM", flush=True)


def offline_examples(tour, readme):
    block = section_block(readme, "## link-cli: offline commands", "console")
    examples = console_examples(block)
    if not examples:
        fail("README.md: the offline console block has no commands")
    with tempfile.TemporaryDirectory(prefix="link-tour-") as scratch:
        env = {k: v for k, v in tour.env.items() if not k.startswith("LINK_")}
        write_frames(os.path.join(scratch, "frames.jsonl"), examples)
        for command, expected in examples:
            exported = re.fullmatch(r"export (\w+)=(\S*)", command)
            if exported:
                env[exported.group(1)] = exported.group(2)
                continue
            done = subprocess.run(
                ["bash", "-c", command], cwd=scratch, env=env, stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                timeout=STEP_TIMEOUT,
            )
            expect_equal(command.replace("\n", " "), done.stdout.splitlines(), expected)


def write_frames(path, examples):
    """frames.jsonl for `verify --lines`: a good frame, a bad one, not JSON."""
    signed = [out[0] for cmd, out in examples if cmd.endswith("| link-cli sign")]
    tampered = [m.group(1) for cmd, out in examples
                if "bad-signature" in " ".join(out) and (m := re.search(r"echo '([^']*)'", cmd))]
    if len(signed) != 1 or len(tampered) != 1:
        fail("README.md's offline block: cannot find its signed and tampered frames")
    with open(path, "w", encoding="utf-8") as f:
        f.write(f"{signed[0]}\n{tampered[0]}\nnot json\n")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cli", required=True, help="the link-cli binary")
    parser.add_argument("--readme", required=True, help="README.md")
    args = parser.parse_args()
    with open(args.readme, encoding="utf-8") as f:
        readme = f.read()
    cli = os.path.abspath(args.cli)
    env = {k: v for k, v in os.environ.items() if not k.startswith("LINK_")}
    # `link-cli` in the offline block's shell commands is the binary under test.
    env["PATH"] = os.path.dirname(cli) + os.pathsep + env.get("PATH", "")
    env["NO_COLOR"] = "1"
    tour = Tour(cli, env)

    def timed_out(_signum, _frame):
        raise TourError(f"the tour did not finish within {TOUR_TIMEOUT} s")

    signal.signal(signal.SIGALRM, timed_out)
    signal.alarm(TOUR_TIMEOUT)
    try:
        print("README.md, link-cli: offline commands", flush=True)
        offline_examples(tour, readme)
        print("README.md, A 5-minute tour", flush=True)
        online_tour(tour, readme)
    except TourError as e:
        print(f"tour: FAILED: {e}", file=sys.stderr)
        tour.show_logs()
        return 1
    finally:
        signal.alarm(0)
        tour.cleanup()
    print("tour: every README command ran as documented", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
