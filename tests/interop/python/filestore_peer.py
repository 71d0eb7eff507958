"""OKX's Python MPP channel store (okxweb3-app-mpp `mpp_evm`) on a shared directory; run by
tests/interop_python.rs against pay402's FileStore.

Usage: filestore_peer.py DIR COMMAND KEY [ARG]
  write KEY STATE_JSON   ChannelState(**STATE_JSON) (snake_case fields, as mpp_evm keeps them)
                         stored with FileStore.put(KEY, state.to_dict())
  read KEY               ChannelState.from_dict(FileStore.get(KEY))
  deduct KEY AMOUNT      mpp_evm's deduct_from_channel (read, spent += AMOUNT, units += 1, put)
  rewrite KEY            read, then put the same state back (Python re-serialises the file)

Each command prints one JSON object: the state as mpp_evm holds it in memory (snake_case,
amounts as decimal strings, signature as 0x-hex) plus `available` (available_balance), or
{"error": ...} with exit status 1 when mpp_evm raised.
"""

import asyncio
import json
import sys
from dataclasses import asdict

from mpp_evm.session.channel import ChannelState, deduct_from_channel
from mpp_evm.store import FileStore


def show(state: ChannelState) -> dict:
    return {**asdict(state), "available": str(state.available_balance)}


async def main(directory: str, command: str, key: str, arg: str | None) -> dict:
    store = FileStore(directory)
    if command == "write":
        state = ChannelState(**json.loads(arg))
        await store.put(key, state.to_dict())
        return show(state)
    if command == "read":
        data = await store.get(key)
        if data is None:
            raise LookupError(f"no channel {key!r}")
        return show(ChannelState.from_dict(data))
    if command == "deduct":
        return show(await deduct_from_channel(store, key, int(arg)))
    if command == "rewrite":
        state = ChannelState.from_dict(await store.get(key))
        await store.put(key, state.to_dict())
        return show(state)
    raise ValueError(f"unknown command {command!r}")


if __name__ == "__main__":
    if len(sys.argv) not in (4, 5):
        sys.exit(__doc__)
    try:
        result = asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] if len(sys.argv) == 5 else None))
    except Exception as e:  # report mpp_evm's error to the Rust side
        print(json.dumps({"error": f"{type(e).__name__}: {e}"}))
        sys.exit(1)
    print(json.dumps(result))
