"""Workers: which process trains which trials of a study, and trials whose process died.

A worker claims a chunk's trials before training them: WAITING -> RUNNING,
which the storage grants to one worker only, so no trial is trained twice
except one whose worker died. Before claiming, the worker writes that it
holds them, so a crash at any moment leaves every RUNNING trial either held
by a live worker or recoverable.

* The default storage, a journal file in the output directory, is used by
  one process at a time (`exclusive`): it holds an `flock` on
  `study.lock`, which the kernel frees when the process dies, however it
  dies. Every trial still RUNNING when it starts was left by a dead process
  and is put back to WAITING, keeping its number (so its key and result).
* A shared storage (`--storage`, `--study_name`): each worker keeps a record
  in the study's system attributes (host, pid, the trials it holds, a
  heartbeat every `beat_every` seconds). A RUNNING trial that no live worker
  holds goes back to WAITING: its worker's process is gone (same host), its
  heartbeat is older than `stale_after` seconds, or it stopped; a trial no
  record names waits `stale_after` seconds from its start.
"""

import contextlib
import datetime
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterable, Sequence

import optuna
from optuna.trial import TrialState

from bnjax.search.ledger import LedgerError
from bnjax.search.storages import JOURNAL_FILE

try:
  import fcntl
except ImportError:  # Windows: no flock; one process per output directory is then on trust
  fcntl = None

WORKER = 'bnjax_worker:'  # study system attribute prefix: one record per worker
ROUND_MADE = 'bnjax_round_made:'  # study system attribute prefix: a round has all its trials
LOCK_FILE = 'study.lock'


class Worker:
  """This process's part in a study: claims, its record, its heartbeat.

  Use as a context manager: entering starts the heartbeat (shared storages);
  leaving (also on an exception or Ctrl-C) puts the trials it holds back to
  WAITING and stops. `exclusive`: the only worker (`directory_lock` held, or
  a study in memory), so every RUNNING trial it did not claim is stale.
  """

  def __init__(
    self,
    study: optuna.Study,
    *,
    exclusive: bool = False,
    stale_after: float = 120.0,
    beat_every: float = 10.0,
  ):
    self.study, self.storage = study, study._storage  # RDB storages come wrapped in Optuna's cache
    self.study_id = study._study_id
    self.exclusive, self.stale_after, self.beat_every = exclusive, stale_after, beat_every
    self.host, self.pid = socket.gethostname(), os.getpid()
    self.id = f'{self.host}:{self.pid}:{uuid.uuid4().hex[:8]}'
    self.held: set[int] = set()
    self._trial_ids: dict[int, int] = {}
    self._mutex = threading.Lock()
    self._stopping = threading.Event()
    self._thread = None

  def __enter__(self) -> 'Worker':
    if not self.exclusive:
      self._write()
      self._thread = threading.Thread(target=self._beat, daemon=True, name='bnjax-heartbeat')
      self._thread.start()
    return self

  def __exit__(self, *exc) -> None:
    self._stopping.set()
    if self._thread is not None:
      self._thread.join()
    self.release(self.held)
    if not self.exclusive:
      self._write(stopped=True)

  # ---------------------------------------------------------------------------- claims

  def trial_id(self, number: int) -> int:
    if number not in self._trial_ids:
      self._trial_ids[number] = self.storage.get_trial_id_from_study_id_trial_number(
        self.study_id, number
      )
    return self._trial_ids[number]

  def claim(self, numbers: Sequence[int]) -> list[int]:
    """Takes what is free of `numbers`; returns the ones this worker holds now, in order."""
    states = {n: self.storage.get_trial(self.trial_id(n)).state for n in numbers}
    waiting = [n for n in numbers if states[n] == TrialState.WAITING]
    mine = [n for n in numbers if n in self.held and states[n] == TrialState.RUNNING]
    if not waiting:
      return mine
    self.hold(waiting)  # first say so: a crash from here on leaves them recoverable
    got = []
    for n in waiting:
      try:
        if self.storage.set_trial_state_values(self.trial_id(n), TrialState.RUNNING):
          got.append(n)
      except optuna.exceptions.UpdateFinishedTrialError:
        pass
    lost = set(waiting) - set(got)
    if lost:
      with self._mutex:
        self.held -= lost
      if not self.exclusive:
        self._write()
    return sorted({*mine, *got}, key=list(numbers).index)

  def hold(self, numbers: Iterable[int]) -> None:
    """Records that this worker trains `numbers` (claimed, or asked by it)."""
    with self._mutex:
      self.held |= set(numbers)
    if not self.exclusive:
      self._write()

  def done(self, numbers: Iterable[int]) -> None:
    """Forgets told trials (the record catches up at its next write; told trials are not stale)."""
    with self._mutex:
      self.held -= set(numbers)

  def release(self, numbers: Iterable[int]) -> None:
    """Puts held trials that are still RUNNING back to WAITING (an abandoned chunk)."""
    for n in sorted(numbers):
      trial_id = self.trial_id(n)
      if self.storage.get_trial(trial_id).state == TrialState.RUNNING:
        self.storage.set_trial_state_values(trial_id, TrialState.WAITING)
    self.done(list(numbers))

  def recover(self) -> list[int]:
    """Puts the trials of dead workers back to WAITING; returns their numbers."""
    running = self.storage.get_all_trials(
      self.study_id, deepcopy=False, states=(TrialState.RUNNING,)
    )
    running = [t for t in running if t.number not in self.held]
    if not running:
      return []
    if self.exclusive:
      stale = running
    else:
      live, dead = set(), set()
      for key, record in self.storage.get_study_system_attrs(self.study_id).items():
        if key.startswith(WORKER) and key != WORKER + self.id:
          (dead if self._dead(record) else live).update(record.get('holds', ()))
      now = datetime.datetime.now()
      stale = [
        t
        for t in running
        if t.number not in live
        and (t.number in dead or (now - t.datetime_start).total_seconds() > self.stale_after)
      ]
    for trial in stale:
      self._trial_ids[trial.number] = trial._trial_id
      self.storage.set_trial_state_values(trial._trial_id, TrialState.WAITING)
    return [t.number for t in stale]

  def made(self, round_index: int, done: bool = False) -> bool:
    """Whether round `round_index` has all its trials (`done=True`: say that it has now)."""
    if self.exclusive:
      return True
    key = f'{ROUND_MADE}{round_index}'
    if done:
      self.storage.set_study_system_attr(self.study_id, key, True)
    return done or bool(self.storage.get_study_system_attrs(self.study_id).get(key))

  def may_make(self, round_index: int) -> bool:
    """Whether this worker makes round `round_index` of a table strategy.

    On a shared storage the first worker to ask wins: creating a study is
    atomic (the storage refuses a second one of the same name), so a study
    named `<study>:round<r>` is the round's lock. The others wait for its
    trials, or take over if its maker died.
    """
    if self.exclusive:
      return True
    name = f'{self.study.study_name}:round{round_index}'
    try:
      lock = self.storage.create_new_study([optuna.study.StudyDirection.MAXIMIZE], name)
    except optuna.exceptions.DuplicatedStudyError:
      lock = self.storage.get_study_id_from_name(name)
      maker = self.storage.get_study_system_attrs(lock).get('worker')
      if maker is None or maker == self.id:
        return maker == self.id
      record = self.storage.get_study_system_attrs(self.study_id).get(WORKER + maker)
      if record is None or not self._dead(record):
        return False
    self.storage.set_study_system_attr(lock, 'worker', self.id)
    return True

  def others_running(self) -> bool:
    """Whether some trial is RUNNING that this worker does not hold."""
    running = self.storage.get_all_trials(
      self.study_id, deepcopy=False, states=(TrialState.RUNNING,)
    )
    return any(t.number not in self.held for t in running)

  # ---------------------------------------------------------------------------- liveness

  def _dead(self, record: dict) -> bool:
    if record.get('stopped'):
      return True
    if record.get('host') == self.host and not _alive(record.get('pid', -1)):
      return True
    return time.time() - record.get('beat', 0) > self.stale_after

  def _write(self, stopped: bool = False) -> None:
    with self._mutex:
      record = {
        'host': self.host,
        'pid': self.pid,
        'beat': time.time(),
        'holds': sorted(self.held),
        'stopped': stopped,
      }
    self.storage.set_study_system_attr(self.study_id, WORKER + self.id, record)

  def _beat(self) -> None:
    while not self._stopping.wait(self.beat_every):
      self._write()


@contextlib.contextmanager
def directory_lock(directory: str):
  """Holds `directory` for this process alone (an `flock` the kernel frees however it dies).

  Under it, a journal lock file left by a process killed while appending is
  stale, and goes.
  """
  os.makedirs(directory, exist_ok=True)
  fd = os.open(os.path.join(directory, LOCK_FILE), os.O_RDWR | os.O_CREAT, 0o644)
  try:
    if fcntl is not None:
      try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
      except OSError:
        owner = os.pread(fd, 64, 0).decode(errors='replace').strip() or 'another process'
        raise LedgerError(
          f'{directory!r} is in use by a search still running ({owner}); wait for it to end, '
          'or run several workers with a shared --storage and --study_name'
        ) from None
      os.ftruncate(fd, 0)
      os.pwrite(fd, f'pid {os.getpid()} on {socket.gethostname()}'.encode(), 0)
    stale = os.path.join(directory, JOURNAL_FILE + '.lock')
    if os.path.lexists(stale):
      os.unlink(stale)
    yield
  finally:
    os.close(fd)


def _alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except (PermissionError, OverflowError, ValueError):
    return True
  return True
