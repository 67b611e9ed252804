defmodule ProtonStreamTest.Cases.Daemon do
  @moduledoc """
  `ProtonStream.Daemon`, `ProtonStream.child_spec/1`, the `:cgroup` option
  map, `statistics/1`, `cgroup_path/1`, `cgroup_config/1` and the OOM
  notice, shared by every mode (`use ProtonStreamTest.Cases.Daemon, mode:
  mode`; each test gets `m`, the mode's options, and `cg`, the prefix of
  cgroup paths, from `ProtonStreamTest.Mode.context/1`): port mode in
  `ProtonStreamTest.DaemonTest`, node mode in
  `ProtonStreamTest.NodeMode.DaemonTest`.

  The cgroup tests (tag `:cgroup`) need root; each makes its own base group.
  """

  defmacro __using__(mode: mode) do
    quote do
      import ProtonStreamTest.Helpers
      import ExUnit.CaptureLog

      alias ProtonStream.Daemon

      setup do
        ProtonStreamTest.Mode.context(unquote(mode))
      end

      # The four v1 controllers the :cgroup map uses on this host.
      @controllers ["memory", "cpu", "cpuacct", "pids"]

      defp start_daemon(command, args, opts) do
        {:ok, daemon} = Daemon.start_link(command, args, opts)
        Process.unlink(daemon)
        path = Daemon.cgroup_path(daemon)

        # Stopped, and its group gone, before the test's base group is
        # removed (else ps_port finds the group gone while it empties it).
        on_exit(fn ->
          if Process.alive?(daemon), do: GenServer.stop(daemon)
          if path, do: wait_until(fn -> not File.exists?(cgroup_dir("memory", path)) end)
        end)

        daemon
      end

      describe "Daemon" do
        test "logs stdout line by line with :log_prefix, :log_transform and :logger_metadata",
             %{m: m} do
          Process.flag(:trap_exit, true)

          log =
            capture_log([metadata: [:daemon_tag], format: "$metadata[$level] $message\n"], fn ->
              {:ok, daemon} =
                Daemon.start_link(
                  "sh",
                  ["-c", "echo one; printf 'two\\nthr'; sleep 0.2; echo ee; printf tail"],
                  [
                    log_output: :warning,
                    log_prefix: "svc> ",
                    log_transform: &String.upcase/1,
                    logger_metadata: [daemon_tag: "t1"]
                  ] ++ m
                )

              assert_receive {:EXIT, ^daemon, :normal}, 5000 + slack_ms()
            end)

          assert log =~ "daemon_tag=t1 [warning] svc> ONE\n"
          assert log =~ "[warning] svc> TWO\n"
          # A line split across chunks is logged whole; a last line without
          # a newline is logged at the exit.
          assert log =~ "[warning] svc> THREE\n"
          assert log =~ "[warning] svc> TAIL\n"
        end

        test "without :log_output nothing is logged; the default prefix is the command",
             %{m: m} do
          Process.flag(:trap_exit, true)

          log =
            capture_log(fn ->
              {:ok, d} = Daemon.start_link("echo", ["quiet"], m)
              assert_receive {:EXIT, ^d, :normal}, 5000 + slack_ms()
              {:ok, d} = Daemon.start_link("echo", ["loud"], [log_output: :info] ++ m)
              assert_receive {:EXIT, ^d, :normal}, 5000 + slack_ms()
            end)

          refute log =~ "quiet"
          assert log =~ "echo: loud"
        end

        test ":stderr_to_stdout logs stderr too", %{m: m} do
          Process.flag(:trap_exit, true)

          log =
            capture_log(fn ->
              {:ok, d} =
                Daemon.start_link(
                  "sh",
                  ["-c", "echo oops >&2"],
                  [log_output: :error, stderr_to_stdout: true] ++ m
                )

              assert_receive {:EXIT, ^d, :normal}, 5000 + slack_ms()
            end)

          assert log =~ "sh: oops"
        end

        test "the exit status becomes the stop reason (:exit_status_to_reason)", %{m: m} do
          Process.flag(:trap_exit, true)
          {:ok, d} = Daemon.start_link("sh", ["-c", "exit 3"], m)
          assert_receive {:EXIT, ^d, {:exit_status, 3}}, 5000 + slack_ms()

          {:ok, d} =
            Daemon.start_link("sh", ["-c", "exit 4"], [exit_status_to_reason: &{:bad, &1}] ++ m)

          assert_receive {:EXIT, ^d, {:bad, 4}}, 5000 + slack_ms()

          {:ok, d} = Daemon.start_link("sh", ["-c", "kill -KILL $$"], m)
          assert_receive {:EXIT, ^d, {:exit_status, 137}}, 5000 + slack_ms()
        end

        test "supervised: restarted when the program dies, tree killed when stopped",
             %{m: m} do
          file = Path.join(System.tmp_dir!(), "proton_stream_daemon_#{rand_hex()}")
          on_exit(fn -> File.rm(file) end)
          script = "sleep 1000 & echo $! >> #{file}; exec sleep 1000"
          name = :"daemon_#{rand_hex()}"

          {:ok, sup} =
            Supervisor.start_link(
              [{Daemon, ["sh", ["-c", script], [name: name] ++ m]}],
              strategy: :one_for_one
            )

          # The program has written its line (so it has exec'd sleep).
          assert wait_until(fn -> file_lines(file) == 1 end)
          os_pid = Daemon.os_pid(name)
          assert os_pid_alive?(os_pid)
          System.cmd("kill", ["-KILL", Integer.to_string(os_pid)])

          # Restarted: a new program under the same name.
          assert wait_until(fn -> file_lines(file) == 2 end),
                 "not restarted: #{inspect(File.read(file))}"

          assert wait_until(fn -> os_pid_of(name) not in [nil, os_pid] end)
          new_pid = os_pid_of(name)

          Supervisor.stop(sup)
          backgrounds = file |> File.read!() |> String.split() |> Enum.map(&String.to_integer/1)

          assert wait_until(fn ->
                   Enum.all?([new_pid | backgrounds], &(not os_pid_alive?(&1)))
                 end)
        end

        test "ProtonStream.child_spec/1 runs a plain child", %{m: m} do
          spec = ProtonStream.child_spec(["sleep", ["1000"], m])
          assert spec.id == {ProtonStream, "sleep"}
          {:ok, sup} = Supervisor.start_link([spec], strategy: :one_for_one)
          [{_, child, :worker, _}] = Supervisor.which_children(sup)
          os_pid = ProtonStream.os_pid(child)
          assert File.read!("/proc/#{os_pid}/comm") == "sleep\n"
          Supervisor.stop(sup)
          assert wait_until(fn -> not os_pid_alive?(os_pid) end)
        end

        test "statistics/1 counts the output; no cgroup: cgroup_path nil, cgroup map empty",
             %{m: m} do
          daemon = start_daemon("sh", ["-c", "head -c 12345 /dev/zero; exec sleep 1000"], m)
          assert wait_until(fn -> Daemon.statistics(daemon).output_byte_count == 12345 end)
          assert %{cgroup: cgroup} = Daemon.statistics(daemon)
          assert cgroup == %{}
          assert Daemon.cgroup_path(daemon) == nil
          assert Daemon.cgroup_config(daemon) == nil
          assert Daemon.cgget(daemon, "memory.max") == {:error, :nocgroup}
        end

        test "bad options raise ArgumentError", %{m: m} do
          assert_raise ArgumentError, ~r/:log_output/, fn ->
            Daemon.start_link("true", [], [log_output: :loud] ++ m)
          end

          assert_raise ArgumentError, ~r/unknown key :memory_maximum/, fn ->
            Daemon.start_link("true", [], [cgroup: %{memory_maximum: 1}] ++ m)
          end
        end
      end

      describe ":cgroup map, statistics and OOM" do
        @describetag :cgroup

        setup %{cg: cg} do
          %{base: create_cgroup!(@controllers, cg)}
        end

        test "limits by v2 names land in this host's files; cgroup_config/1 reads them back",
             %{m: m, base: base, cg: cg} do
          limits = %{
            memory_max: 64 * 1024 * 1024,
            cpu_max: {50_000, 100_000},
            cpu_weight: 200,
            pids_max: 40
          }

          daemon = start_daemon("sleep", ["1000"], [cgroup: limits, cgroup_base: base] ++ m)
          path = Daemon.cgroup_path(daemon)
          assert path =~ ~r"\A#{cg}#{base}/[0-9a-f]{8}\z"
          os_pid = Daemon.os_pid(daemon)

          for controller <- @controllers,
              do: assert(cgroup_of(os_pid, controller) == "/" <> path)

          if ProtonStream.Cgroup.unified?() do
            assert {:ok, "67108864"} = Daemon.cgget(daemon, "memory.max")
          else
            assert File.read!(cgroup_dir("memory", path) <> "/memory.limit_in_bytes") ==
                     "67108864\n"

            assert File.read!(cgroup_dir("cpu", path) <> "/cpu.cfs_quota_us") == "50000\n"
            assert File.read!(cgroup_dir("cpu", path) <> "/cpu.cfs_period_us") == "100000\n"
            assert File.read!(cgroup_dir("cpu", path) <> "/cpu.shares") == "2048\n"
            assert File.read!(cgroup_dir("pids", path) <> "/pids.max") == "40\n"
          end

          # v2 names through cgget on every host.
          assert {:ok, "67108864"} = Daemon.cgget(daemon, "memory.max")
          assert Daemon.cgroup_config(daemon) == limits

          # Reusable as :cgroup.
          again =
            start_daemon(
              "sleep",
              ["1000"],
              [cgroup: Daemon.cgroup_config(daemon), cgroup_base: base] ++ m
            )

          assert Daemon.cgroup_config(again) == limits

          assert :ok = Daemon.cgset(daemon, "memory.max", 128 * 1024 * 1024)
          assert Daemon.cgroup_config(daemon).memory_max == 128 * 1024 * 1024

          GenServer.stop(daemon)
          refute_group_left(path)
        end

        test "statistics/1 is keyed by v2 file names", %{m: m, base: base} do
          script =
            "head -c 100000 /dev/zero; i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; exec sleep 1000"

          daemon = start_daemon("sh", ["-c", script], [cgroup: %{}, cgroup_base: base] ++ m)
          assert wait_until(fn -> Daemon.statistics(daemon).output_byte_count == 100_000 end)

          # Only sleep is left once sh has exec'd it and head was reaped.
          assert wait_until(fn -> Daemon.statistics(daemon).cgroup["pids.current"] == 1 end)
          %{cgroup: stats} = Daemon.statistics(daemon)
          assert stats["memory.current"] > 0
          assert stats["memory.peak"] >= stats["memory.current"]
          assert stats["cpu.stat"]["usage_usec"] > 0
          assert stats["memory.events"]["oom_kill"] == 0
        end

        test "cmd/3 and stream!/3 take :cgroup", %{m: m, base: base} do
          script =
            "cat /sys/fs/cgroup/memory$(grep :memory: /proc/self/cgroup | cut -d: -f3)/memory.limit_in_bytes"

          script =
            if ProtonStream.Cgroup.unified?(),
              do: "cat /sys/fs/cgroup$(cut -d: -f3 /proc/self/cgroup)/memory.max",
              else: script

          opts = [cgroup: %{memory_max: 64 * 1024 * 1024}, cgroup_base: base] ++ m
          assert {"67108864\n", 0} = ProtonStream.cmd("sh", ["-c", script], opts)

          assert ["67108864\n"] =
                   ProtonStream.stream!("sh", ["-c", script], opts) |> Enum.to_list()
        end

        test "open/3 takes :cgroup too; the group is gone when the exit comes",
             %{m: m, base: base, cg: cg} do
          Process.flag(:trap_exit, true)

          {:ok, ps} =
            ProtonStream.open(
              "sh",
              ["-c", "echo ready; read x"],
              [cgroup: %{pids_max: 10}, cgroup_base: base] ++ m
            )

          assert_receive {^ps, {:data, "ready\n"}}, 5000 + slack_ms()
          "/" <> path = cgroup_of(ProtonStream.os_pid(ps), "pids")
          assert path =~ ~r"\A#{cg}#{base}/"
          assert File.read!(cgroup_dir("pids", path) <> "/pids.max") == "10\n"
          ProtonStream.command(ps, "go\n")
          assert_receive {:EXIT, ^ps, :normal}, 5000 + slack_ms()
          refute_group_left(path)
        end

        @tag timeout: 60_000
        test "an OOM kill: the owner gets {ps, {:oom_killed, n}} before the exit",
             %{m: m, base: base} do
          Process.flag(:trap_exit, true)
          # The victim is tail, a child of sh: not the program itself.
          script = "tail /dev/zero; echo survived"

          # Port mode logs it here (the node logs it on its side).
          capture_log(fn ->
            {:ok, ps} =
              ProtonStream.open(
                "sh",
                ["-c", script],
                [
                  cgroup: %{memory_max: 32 * 1024 * 1024, memory_swap_max: 0},
                  cgroup_base: base,
                  stderr_to_stdout: true
                ] ++ m
              )

            assert_receive {^ps, {:oom_killed, n}} when n >= 1, 30_000
            assert %{stdout: out, exit: :normal} = collect(ps, 5000 + slack_ms())
            assert out =~ "survived\n"
          end)
        end

        test "the OOM log line names the process the kernel killed", %{m: m, base: base} do
          Process.flag(:trap_exit, true)

          log =
            capture_log(fn ->
              {:ok, d} =
                Daemon.start_link(
                  "sh",
                  ["-c", "tail /dev/zero; echo survived"],
                  [
                    cgroup: %{memory_max: 32 * 1024 * 1024, memory_swap_max: 0},
                    cgroup_base: base,
                    log_output: :info,
                    stderr_to_stdout: true
                  ] ++ m
                )

              assert_receive {:EXIT, ^d, :normal}, 30_000
            end)

          assert log =~ ~r/OOM killer killed tail \(os pid \d+\)/
          assert log =~ "while running "
          # sh went on after its child was killed.
          assert log =~ "sh: survived"
        end
      end

      defp file_lines(file) do
        case File.read(file) do
          {:ok, text} -> length(String.split(text, "\n", trim: true))
          {:error, _} -> 0
        end
      end

      # The os pid of the daemon registered as `name`, nil while there is none
      # (a restart in progress).
      defp os_pid_of(name) do
        Daemon.os_pid(name)
      catch
        :exit, _ -> nil
      end

      defp refute_group_left(path) do
        assert wait_until(fn ->
                 not Enum.any?(@controllers, &File.exists?(cgroup_dir(&1, path)))
               end)
      end
    end
  end
end
