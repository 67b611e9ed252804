defmodule ProtonStreamTest.SharedPortKilledTest do
  # The VM's shared ps_port SIGKILLed (or crashed) with programs running that
  # have started programs of their own, without cgroups: the programs die by
  # their parent-death signal, and their children, reparented to init, are
  # killed by the next shared ps_port, which the application starts at once
  # and which finds them by the dead one's marker (docs/reliability.md,
  # "When ps_port dies"). Every owner is told; the next open works.
  #
  # Not async: it kills the shared ps_port every other test uses.
  use ExUnit.Case, async: false

  import ProtonStreamTest.Helpers

  alias ProtonStream.SharedPort

  test "shared ps_port SIGKILLed: owners told, programs and their children gone, next open works" do
    Process.flag(:trap_exit, true)

    programs =
      for _ <- 1..3 do
        {:ok, ps} = ProtonStream.open("sh", ["-c", ~S(sleep 1000 & echo "ready $!"; wait)])
        assert_receive {^ps, {:data, "ready " <> grandchild}}, 5000 + slack_ms()
        {ps, ProtonStream.os_pid(ps), String.to_integer(String.trim(grandchild))}
      end

    helper = SharedPort.os_pid()
    assert is_integer(helper)
    for {_, os_pid, _} <- programs, do: assert(os_ppid(os_pid) == helper)

    {_, 0} = System.cmd("kill", ["-KILL", Integer.to_string(helper)])

    for {ps, _, _} <- programs do
      assert_receive {:EXIT, ^ps, {:ps_port_exited, _}}, 5000 + slack_ms()
    end

    # A generous bound (the 1 s of issue 11 is measured, not asserted: 35-90
    # ms after the restart in test/go/predecessor_test.go).
    pids = Enum.flat_map(programs, fn {_, os_pid, gc} -> [os_pid, gc] end)
    assert wait_until(fn -> Enum.all?(pids, &(not os_pid_alive?(&1))) end, 5000)

    assert %{stdout: "again\n", exit: :normal} = run("echo", ["again"])
    assert SharedPort.os_pid() not in [nil, helper]
  end
end
