"""Four processes writing evaluations of one supernet and device at once, on SQLite and PostgreSQL:
no lost rows, no duplicates, no "database is locked", fronts equal to a rebuild from scratch."""

import subprocess
import sys

import pytest

WRITER = """
import random, sys
from subnetsearch.storage import Store, StoredEvaluation
url, supernet_hash, worker = sys.argv[1], sys.argv[2], int(sys.argv[3])
store = Store(url)
rng = random.Random(worker)
written = 0
for i in range(40):
    mode = f"m{rng.randrange(100)}"  # the four writers overlap on purpose
    value = int(mode[1:])
    accuracy, latency = 0.5 + (value * 37 % 100) / 250, 0.2 + (value * 61 % 100) / 40
    written += store.put_evaluation(StoredEvaluation(supernet_hash, "dev-a", mode, "{}", "k", {"split": "val"},
                                    accuracy, 0.1, int(latency * 1000), 1, latency, None, latency, "model"))
print(written)
"""


@pytest.mark.slow
def test_four_writer_processes_lose_and_duplicate_nothing(store_url, stored, check_fronts) -> None:
    store, supernet_hash = stored
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, store_url, supernet_hash, str(w)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for w in range(4)]
    outputs = [w.communicate(timeout=300) for w in writers]
    for writer, (_out, err) in zip(writers, outputs, strict=True):
        assert writer.returncode == 0, err[-2000:]
        assert "locked" not in err
    attempted = set()
    for worker in range(4):
        import random

        rng = random.Random(worker)
        attempted |= {f"m{rng.randrange(100)}" for _ in range(40)}
    inserted = sum(int(out) for out, _ in outputs)
    assert inserted == len(attempted) == store.count_evaluations()  # each mode stored exactly once, by one writer
    check_fronts(store)
    assert store.get_front("dev-a", "accuracy,latency")


def test_two_processes_adding_one_device_name_at_once(postgres_store_url) -> None:
    """The loser of the race (its check saw no row; its insert waited on the winner's) gets the clear
    'exists already', not a unique-violation traceback; `replace` wins instead."""
    import threading

    import pytest
    from sqlalchemy import create_engine, text

    from subnetsearch.devices import Device
    from subnetsearch.storage import StorageError, Store

    store = Store(postgres_store_url)
    store.add_device(Device("first"))
    outcomes: dict[str, object] = {}

    def add(replace: bool) -> None:
        try:
            outcomes[str(replace)] = Store(postgres_store_url).add_device(Device("racer", description="mine"), replace)
        except StorageError as error:
            outcomes[str(replace)] = error

    engine = create_engine(postgres_store_url)
    for replace in (False, True):
        with engine.connect() as other:  # another process's transaction, inserted but not committed yet
            other.execute(text("DELETE FROM ss_devices WHERE name = 'racer'"))
            other.commit()
            other.execute(text("INSERT INTO ss_devices (name, location, protocol, energy, description, created_at) SELECT "
                               "'racer', location, protocol, energy, 'theirs', now() FROM ss_devices WHERE name = 'first'"))
            racer = threading.Thread(target=add, args=(replace,))
            racer.start()
            racer.join(timeout=1.0)
            assert racer.is_alive()  # its insert waits on the uncommitted row
            other.commit()
            racer.join(timeout=30)
        result = outcomes[str(replace)]
        if replace:
            assert isinstance(result, Device) and store.get_device("racer").description == "mine"
        else:
            assert isinstance(result, StorageError) and "device 'racer' exists already" in str(result)
            assert store.get_device("racer").description == "theirs"
    engine.dispose()
    with pytest.raises(StorageError, match="exists already"):
        store.add_device(Device("racer"))
