defmodule ProtonStreamTest.LocalTest do
  # What a local ps does (support/local_cases.exs) with the VM's shared
  # ps_port, the default; then what only the shared ps_port has: one helper
  # for every program, no head-of-line blocking, its router dying, and
  # 1 000 owners killed at once.
  #
  # Not async: tests here kill the shared ps_port and its router.
  use ExUnit.Case, async: false
  use ProtonStreamTest.Cases.Local, mode: :shared

  alias ProtonStream.SharedPort

  defmodule Stuck do
    @moduledoc false
    # A callback module whose handle_stdout/2 never returns: its program's
    # window fills and stays full.
    use GenServer
    @behaviour ProtonStream

    @impl GenServer
    def init(test_pid), do: {:ok, test_pid}

    @impl ProtonStream
    def handle_stdout(_data, test_pid) do
      send(test_pid, {:stuck, self()})
      Process.sleep(:infinity)
    end
  end

  describe "the shared ps_port" do
    test "one ps_port runs every program that is not isolated", %{m: m} do
      handles = for _ <- 1..5, do: elem(ProtonStream.open("cat", [], m), 1)
      helper = SharedPort.os_pid()
      assert is_integer(helper)

      for ps <- handles, do: assert(os_ppid(ProtonStream.os_pid(ps)) == helper)
      assert File.read!("/proc/#{helper}/cmdline") =~ "--shared"

      {:ok, iso} = ProtonStream.open("cat", [], isolated: true)
      assert os_ppid(ProtonStream.os_pid(iso)) != helper

      for ps <- [iso | handles], do: ProtonStream.close(ps)
      for ps <- [iso | handles], do: assert_receive({^ps, :closed}, 2000 + slack_ms())
    end

    test "a program whose consumer never returns stops only itself (windows per child)",
         %{m: m} do
      {:ok, stuck} =
        ProtonStream.start_link(
          Stuck,
          "sh",
          ["-c", "read x; exec cat /dev/zero"],
          self(),
          [stdio_window: 4096] ++ m
        )

      os_pid = ProtonStream.os_pid(stuck)
      ProtonStream.command(stuck, "go\n")
      assert_receive {:stuck, ^stuck}, 5000 + slack_ms()

      # 20 MB through the same ps_port meanwhile, byte-exact, twice at once.
      expected = Enum.map_join(1..200_000, &"#{&1}\n")

      results =
        Task.async_stream(1..2, fn _ ->
          Process.flag(:trap_exit, true)
          run("seq", ["1", "200000"], m, 60_000)
        end)

      for {:ok, result} <- results do
        assert result.exit == :normal
        assert result.stdout == expected
      end

      Process.unlink(stuck)
      Process.exit(stuck, :kill)
      assert wait_until(fn -> not os_pid_alive?(os_pid) end, 5000)
    end

    # Batching does not loosen the window: with the router suspended, what
    # a program that writes without pause got out is at most its window.
    test "acks in batches: a router that does not read holds at most one window", %{m: m} do
      window = 65_536
      total = 10_000_000

      {:ok, ps} =
        ProtonStream.open(
          "sh",
          ["-c", "head -c #{total} /dev/zero; exec sleep 10"],
          [stdio_window: window] ++ m
        )

      id = :sys.get_state(ps).handle.id
      # Some output has been passed on, so acks were due and sent.
      assert_receive {^ps, {:data, first}}, 5000 + slack_ms()
      router = Process.whereis(SharedPort)
      :sys.suspend(router)

      try do
        # What waits for the router: this program's frames only (other
        # tests may run programs on the same port).
        held = fn ->
          {:messages, msgs} = Process.info(router, :messages)

          for {port, {:data, frame}} <- msgs,
              is_port(port),
              {:stdout, ^id, data} <- [ProtonStream.SharedFrames.decode(frame)],
              reduce: 0,
              do: (n -> n + byte_size(data))
        end

        # ps_port sends what credit the router returned before it stopped
        # reading, and then no more: at most a window, however long we wait.
        assert wait_until(fn -> held.() > 0 end, 5000)
        Process.sleep(200)
        assert held.() <= window
        Process.sleep(200)
        assert held.() <= window
        assert byte_size(first) + mailbox_bytes(self(), ps) + held.() < total
      after
        :sys.resume(router)
      end

      # Resumed, the router passes everything on: nothing was lost.
      assert wait_until(fn -> byte_size(first) + mailbox_bytes(self(), ps) == total end, 20_000)
      ProtonStream.close(ps)
      assert_receive {^ps, :closed}, 5000 + slack_ms()
    end

    test "its router killed: every owner is told, programs are gone, the next open works",
         %{m: m} do
      programs =
        for _ <- 1..3 do
          {:ok, ps} = ProtonStream.open("sh", ["-c", ~S(sleep 1000 & echo "ready $!"; wait)], m)
          assert_receive {^ps, {:data, "ready " <> grandchild}}, 5000 + slack_ms()
          {ps, ProtonStream.os_pid(ps), String.to_integer(String.trim(grandchild))}
        end

      router = Process.whereis(SharedPort)
      helper = SharedPort.os_pid()

      capture_log(fn ->
        Process.exit(router, :kill)

        for {ps, _, _} <- programs do
          assert_receive {:EXIT, ^ps, {:ps_port_exited, {:shared_port_down, :killed}}},
                         5000 + slack_ms()
        end
      end)

      pids = [helper | Enum.flat_map(programs, fn {_, os, gc} -> [os, gc] end)]
      assert wait_until(fn -> Enum.all?(pids, &(not os_pid_alive?(&1))) end, 5000)

      # The application started a new router; the next open starts a new ps_port.
      assert wait_until(fn -> Process.whereis(SharedPort) not in [nil, router] end)
      assert %{stdout: "again\n", exit: :normal} = run("echo", ["again"], m)
      assert SharedPort.os_pid() != helper
    end

    @tag timeout: 300_000
    @tag :scale
    test "1 000 programs, their owners all killed at once: every program is gone", %{m: m} do
      test_pid = self()

      owners =
        for _ <- 1..1000 do
          spawn(fn ->
            {:ok, ps} = ProtonStream.open("sleep", ["1000"], m)
            send(test_pid, {:os_pid, self(), ProtonStream.os_pid(ps)})
            Process.sleep(:infinity)
          end)
        end

      os_pids =
        for owner <- owners do
          assert_receive {:os_pid, ^owner, os_pid}, 60_000
          os_pid
        end

      helper = SharedPort.os_pid()
      assert Enum.all?(os_pids, &(os_ppid(&1) == helper))

      t0 = System.monotonic_time(:millisecond)
      for owner <- owners, do: Process.exit(owner, :kill)

      gone? = wait_until(fn -> Enum.all?(os_pids, &(not os_pid_alive?(&1))) end, 30_000)

      if not gone? do
        # Leave nothing to the next tests, then fail.
        left = Enum.filter(os_pids, &os_pid_alive?/1)
        for pid <- left, do: System.cmd("kill", ["-KILL", Integer.to_string(pid)])
        wait_until(fn -> Enum.all?(left, &(not os_pid_alive?(&1))) end, 10_000)
        flunk("#{length(left)} programs still alive 30 s after their owners were killed")
      end

      elapsed = System.monotonic_time(:millisecond) - t0

      if System.get_env("RELIABILITY_REPORT"),
        do:
          IO.puts("\nshared ps_port: 1 000 owners killed, all programs gone after #{elapsed} ms")

      # The same ps_port goes on serving.
      assert SharedPort.os_pid() == helper
      assert %{stdout: "still\n"} = run("echo", ["still"], m)
    end
  end
end
