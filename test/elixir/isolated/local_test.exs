defmodule ProtonStreamTest.Isolated.LocalTest do
  # The local tests (support/local_cases.exs) with isolated: true: a ps_port
  # of its own per program; then what only isolated has: its server reads
  # the port and acks itself.
  use ExUnit.Case, async: false
  @moduletag :isolated
  use ProtonStreamTest.Cases.Local, mode: :isolated

  # Batching does not loosen the window: with the server suspended, what a
  # program that writes without pause got out is at most its window.
  test "acks in batches: a server that does not read holds at most one window", %{m: m} do
    window = 65_536
    # Enough that it is still being written when the server is suspended.
    total = 50_000_000

    {:ok, ps} =
      ProtonStream.open(
        "sh",
        ["-c", "head -c #{total} /dev/zero; exec sleep 10"],
        [stdio_window: window] ++ m
      )

    port = :sys.get_state(ps).handle.port
    # More than a window has been passed on, so acks were due and sent.
    assert wait_until(fn -> mailbox_bytes(self(), ps) > 2 * window end, 10_000)
    :sys.suspend(ps)

    try do
      # What waits for the server: the port's output frames.
      held = fn ->
        {:messages, msgs} = Process.info(ps, :messages)

        for {^port, {:data, frame}} <- msgs,
            {:stdout, data} <- [ProtonStream.Port.decode(frame)],
            reduce: 0,
            do: (n -> n + byte_size(data))
      end

      # ps_port sends what credit the server returned before it stopped
      # reading, and then no more: at most a window, however long we wait.
      Process.sleep(200)
      assert held.() <= window
      Process.sleep(200)
      assert held.() <= window
      assert mailbox_bytes(self(), ps) + held.() < total
    after
      :sys.resume(ps)
    end

    # Resumed, the server passes everything on: nothing was lost.
    assert wait_until(fn -> mailbox_bytes(self(), ps) == total end, 20_000)
    ProtonStream.close(ps)
    assert_receive {^ps, :closed}, 5000 + slack_ms()
  end
end
