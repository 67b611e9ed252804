defmodule ProtonStreamTest.Cases.Exit do
  @moduledoc """
  Exit reasons, spawn errors and the owner-killed contract, shared by the
  shared ps_port (`ProtonStreamTest.ExitTest`), `isolated: true` and node mode
  (`ProtonStreamTest.NodeMode.ExitTest`); see `ProtonStreamTest.Cases.Messages`
  for how the sharing works.

  Not shared: the server's stop reason when the owner crashes
  (`{:shutdown, {:owner_exited, reason}}`), a local server detail
  (`ProtonStreamTest.Cases.Local`).

  The modules using this are not async: the timing assertions (the ones
  issue 3 asks for) should not compete with the throughput tests for the CPU.
  """

  defmacro __using__(mode: mode) do
    quote do
      import ProtonStreamTest.Helpers

      setup do
        ProtonStreamTest.Mode.context(unquote(mode))
      end

      describe "exit reasons" do
        setup do
          Process.flag(:trap_exit, true)
          :ok
        end

        test "true exits :normal", %{m: m} do
          {:ok, ps} = ProtonStream.open("true", [], m)
          assert_receive {:EXIT, ^ps, :normal}, 10_000
        end

        test "false exits {:exit_status, 1}", %{m: m} do
          {:ok, ps} = ProtonStream.open("false", [], m)
          assert_receive {:EXIT, ^ps, {:exit_status, 1}}, 10_000
        end

        test "other statuses are reported as they are", %{m: m} do
          assert %{exit: {:exit_status, 255}} = run("sh", ["-c", "exit 255"], m)
        end

        test "a program that SIGTERMs itself exits {:signal, 15}", %{m: m} do
          {:ok, ps} = ProtonStream.open("sh", ["-c", "kill -TERM $$"], m)
          assert_receive {:EXIT, ^ps, {:signal, 15}}, 10_000
        end

        test "a program killed from outside exits {:signal, 9}", %{m: m} do
          {:ok, ps} = ProtonStream.open("sleep", ["100"], m)
          System.cmd("kill", ["-KILL", Integer.to_string(ProtonStream.os_pid(ps))])
          assert_receive {:EXIT, ^ps, {:signal, 9}}, 10_000
        end
      end

      describe "programs that cannot be started" do
        setup do
          dir = Path.join(System.tmp_dir!(), "proton_stream_exit_test_#{rand_hex()}")
          File.mkdir_p!(dir)
          on_exit(fn -> File.rm_rf!(dir) end)
          %{dir: dir}
        end

        test "a command not on PATH raises ErlangError :enoent in the caller", %{m: m} do
          assert_raise ErlangError, ~r/enoent/, fn ->
            ProtonStream.open("no_such_program_xyz", [], m)
          end
        end

        test "an interpreter that does not exist: {:error, {:spawn_error, :enoent, message}}",
             %{dir: dir, m: m} do
          script = Path.join(dir, "bad_interpreter")
          File.write!(script, "#!/no/such/interpreter\n")
          File.chmod!(script, 0o755)
          assert {:error, {:spawn_error, :enoent, message}} = ProtonStream.open(script, [], m)
          assert message =~ script
          # The caller was not linked to anything and nothing is left behind.
          assert {:links, []} = Process.info(self(), :links)
        end

        test "a file that is not a program: {:error, {:spawn_error, :enoexec, _}}",
             %{dir: dir, m: m} do
          file = Path.join(dir, "not_a_program")
          File.write!(file, <<0, 1, 2, 3>>)
          File.chmod!(file, 0o755)
          assert {:error, {:spawn_error, :enoexec, _}} = ProtonStream.open(file, [], m)
        end

        test "an unknown user: {:error, {:spawn_error, :baduser, _}}", %{m: m} do
          assert {:error, {:spawn_error, :baduser, message}} =
                   ProtonStream.open("true", [], [uid: "no_such_user_xyz"] ++ m)

          assert message =~ "no_such_user_xyz"
        end

        test "an unknown group: {:error, {:spawn_error, :badgroup, _}}", %{m: m} do
          assert {:error, {:spawn_error, :badgroup, _}} =
                   ProtonStream.open("true", [], [gid: "no_such_group_xyz"] ++ m)
        end

        test "a working directory that does not exist: {:error, {:spawn_error, :enoent, _}}",
             %{m: m} do
          assert {:error, {:spawn_error, :enoent, message}} =
                   ProtonStream.open("true", [], [cd: "/no/such/dir"] ++ m)

          # It names the directory as the working directory, not as the program.
          assert message =~ ~s[working directory (cd) "/no/such/dir"]
        end
      end

      describe "owner killed" do
        test "the program and its children are gone once delay_to_sigkill has passed",
             %{m: m} do
          {os_pid, tree, owner} =
            start_owned_tree(["-c", "sleep 1000 & sleep 1000 & echo ready; wait"], m, 2)

          assert length(tree) == 3

          t0 = System.monotonic_time(:millisecond)
          Process.exit(owner, :kill)
          assert wait_until(fn -> Enum.all?(tree, &(not os_pid_alive?(&1))) end, 2000)
          elapsed = System.monotonic_time(:millisecond) - t0
          assert elapsed <= 500 + slack_ms(), "took #{elapsed} ms (os pid #{os_pid})"
        end

        test "children that ignore SIGTERM are SIGKILLed after delay_to_sigkill", %{m: m} do
          script = ~S(trap "" TERM; sleep 1000 & sleep 1000 & echo ready; wait)

          {_os_pid, tree, owner} =
            start_owned_tree(["-c", script], [delay_to_sigkill: 250] ++ m, 2)

          t0 = System.monotonic_time(:millisecond)
          Process.exit(owner, :kill)
          assert wait_until(fn -> Enum.all?(tree, &(not os_pid_alive?(&1))) end, 2000)
          elapsed = System.monotonic_time(:millisecond) - t0
          assert elapsed >= 250, "SIGKILL came after #{elapsed} ms, before delay_to_sigkill"
          assert elapsed <= 250 + slack_ms(), "took #{elapsed} ms"
        end

        test "a SIGTERM-ignoring program with delay_to_sigkill: 1000 is alive at 100 ms and gone after the delay",
             %{m: m} do
          {os_pid, _tree, owner} =
            start_owned_tree(
              ["-c", ~S(trap "" TERM; echo ready; exec sleep 1000)],
              [delay_to_sigkill: 1000] ++ m,
              0
            )

          t0 = System.monotonic_time(:millisecond)
          Process.exit(owner, :kill)
          sleep_until(t0 + 100)
          alive? = os_pid_alive?(os_pid)
          elapsed = System.monotonic_time(:millisecond) - t0
          # A loaded machine may wake us after the delay: then the program
          # is rightly gone and the look says nothing.
          assert alive? or elapsed >= 1000,
                 "gone after #{elapsed} ms, before delay_to_sigkill (1000 ms)"

          assert wait_until(fn -> not os_pid_alive?(os_pid) end, 1500),
                 "still alive #{1500 + slack_ms()} ms after its owner was killed"
        end

        test "a normal owner exit takes the program down too", %{m: m} do
          {os_pid, _tree, owner} = start_owned_tree(["-c", "echo ready; exec sleep 1000"], m, 0)
          send(owner, :exit_normally)
          assert wait_until(fn -> not os_pid_alive?(os_pid) end, 600)
        end

        test "without a cgroup: a grandchild that left the process group is gone too",
             %{m: m} do
          test_pid = self()
          # setsid puts the grandchild in a session of its own: SIGTERM to the
          # program's process group does not reach it.
          script = ~S(setsid sleep 1000 & echo "ready $!"; exec sleep 1000)

          owner =
            spawn(fn ->
              {:ok, ps} = ProtonStream.open("sh", ["-c", script], m)

              receive do
                {^ps, {:data, "ready " <> escapee}} ->
                  escapee = String.to_integer(String.trim(escapee))
                  send(test_pid, {:pids, ProtonStream.os_pid(ps), escapee})
              end

              Process.sleep(:infinity)
            end)

          assert_receive {:pids, os_pid, escapee}, 10_000
          assert wait_until(fn -> File.read("/proc/#{escapee}/comm") == {:ok, "sleep\n"} end)

          t0 = System.monotonic_time(:millisecond)
          Process.exit(owner, :kill)

          assert wait_until(
                   fn -> not os_pid_alive?(os_pid) and not os_pid_alive?(escapee) end,
                   2000
                 )

          assert System.monotonic_time(:millisecond) - t0 <= 500 + slack_ms()
        end

        @tag :cgroup
        test "with a cgroup: every process in the group is gone, escapees included",
             %{m: m, cg: cg} do
          base = create_cgroup!(["cpu"], cg)
          test_pid = self()
          # The grandchild leaves the program's process group (setsid); the
          # cgroup still holds it.
          script = "setsid sleep 1000 & echo ready; exec sleep 1000"
          opts = [cgroup_controllers: ["cpu"], cgroup_base: base] ++ m

          owner =
            spawn(fn ->
              {:ok, ps} = ProtonStream.open("sh", ["-c", script], opts)

              receive do
                {^ps, {:data, "ready\n"}} -> send(test_pid, {:os_pid, ProtonStream.os_pid(ps)})
              end

              Process.sleep(:infinity)
            end)

          assert_receive {:os_pid, os_pid}, 10_000
          "/" <> group = cgroup_of(os_pid, "cpu")
          procs = Path.join(cgroup_dir("cpu", group), "cgroup.procs")
          assert wait_until(fn -> length(String.split(File.read!(procs))) == 2 end)
          pids = procs |> File.read!() |> String.split() |> Enum.map(&String.to_integer/1)

          t0 = System.monotonic_time(:millisecond)
          Process.exit(owner, :kill)
          assert wait_until(fn -> Enum.all?(pids, &(not os_pid_alive?(&1))) end, 2000)
          assert System.monotonic_time(:millisecond) - t0 <= 500 + slack_ms()
          assert wait_until(fn -> not File.exists?(cgroup_dir("cpu", group)) end, 2000)
        end
      end

      # Starts `sh args` from a fresh owner process; waits until the program
      # printed "ready" and has `descendants` descendants. Returns the
      # program's pid, its whole process tree and the owner.
      defp start_owned_tree(args, opts, descendants) do
        test_pid = self()

        owner =
          spawn(fn ->
            {:ok, ps} = ProtonStream.open("sh", args, opts)

            receive do
              {^ps, {:data, "ready\n"}} -> send(test_pid, {:started, ProtonStream.os_pid(ps)})
            end

            receive do
              :exit_normally -> :ok
            end
          end)

        assert_receive {:started, os_pid}, 10_000
        assert wait_until(fn -> length(os_descendants(os_pid)) == descendants end)
        {os_pid, [os_pid | os_descendants(os_pid)], owner}
      end

      defp sleep_until(t) do
        remaining = t - System.monotonic_time(:millisecond)
        if remaining > 0, do: Process.sleep(remaining)
      end
    end
  end
end
