defmodule ProtonStreamTest.ExitTest do
  # Exit reasons, spawn errors, and the owner-killed contract through a port:
  # the shared tests (support/exit_cases.exs) and port mode's server detail.
  use ExUnit.Case, async: false
  use ProtonStreamTest.Cases.Exit, mode: :port

  test "the server stops with {:shutdown, {:owner_exited, reason}} when the owner crashes" do
    test_pid = self()

    owner =
      spawn(fn ->
        {:ok, ps} = ProtonStream.open("cat", [])
        send(test_pid, {:ps, ps})
        Process.sleep(:infinity)
      end)

    assert_receive {:ps, ps}, 10_000
    ref = Process.monitor(ps)
    Process.exit(owner, :boom)
    assert_receive {:DOWN, ^ref, :process, ^ps, {:shutdown, {:owner_exited, :boom}}}, 10_000
  end
end
