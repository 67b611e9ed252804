defmodule ProtonStreamTest.StreamTest do
  # Output fidelity and flow control through a port: the shared tests
  # (support/stream_cases.exs) and where message mode's output waits.
  use ExUnit.Case, async: true
  use ProtonStreamTest.Cases.Stream, mode: :port

  test "message mode: the server forwards at once, so its own mailbox stays short" do
    {:ok, ps} =
      ProtonStream.open("sh", ["-c", "head -c 10000000 /dev/zero; exec sleep 10"],
        stdio_window: 65536
      )

    # We do not read: the output piles up in our mailbox, not in the server's.
    assert wait_until(fn -> mailbox_bytes(self(), ps) == 10_000_000 end)
    {:message_queue_len, len} = Process.info(ps, :message_queue_len)
    assert len == 0
    ProtonStream.close(ps)
    assert_receive {^ps, :closed}, 10_000
  end
end
