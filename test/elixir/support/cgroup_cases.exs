defmodule ProtonStreamTest.Cases.Cgroup do
  @moduledoc """
  The cgroup options at work, shared by the shared ps_port
  (`ProtonStreamTest.CgroupTest`) and node mode
  (`ProtonStreamTest.NodeMode.CgroupTest`); see
  `ProtonStreamTest.Cases.Messages` for how the sharing works. Needs root
  (cgcreate); a non-root developer runs `mix test --exclude cgroup`.

  In node mode cgroup options are relative to the node's `--cgroup-base`:
  the context's `cg` is that prefix, and the test's base group is made
  under it.

  Not shared: `ProtonStream.Cgroups` (cgget/cgset), which runs no program.
  """

  defmacro __using__(mode: mode) do
    quote do
      import ProtonStreamTest.Helpers

      @moduletag :cgroup

      setup do
        Process.flag(:trap_exit, true)
        %{cg: cg} = context = ProtonStreamTest.Mode.context(unquote(mode))
        Map.put(context, :base, create_cgroup!(["memory", "cpu"], cg))
      end

      test ":cgroup_path: the program and its children run in the group, which is gone when the exit comes",
           %{base: base, m: m, cg: cg} do
        path = base <> "/fixed"

        {:ok, ps} =
          ProtonStream.open(
            "sh",
            ["-c", "sleep 1000 & echo ready; read line; kill $!"],
            [cgroup_controllers: ["cpu", "memory"], cgroup_path: path] ++ m
          )

        assert_receive {^ps, {:data, "ready\n"}}, 10_000
        os_pid = ProtonStream.os_pid(ps)
        assert cgroup_of(os_pid, "cpu") == "/" <> cg <> path
        assert cgroup_of(os_pid, "memory") == "/" <> cg <> path
        [sleep] = os_descendants(os_pid)
        assert cgroup_of(sleep, "memory") == "/" <> cg <> path

        tasks =
          cgroup_dir("memory", cg <> path)
          |> Path.join("cgroup.procs")
          |> File.read!()
          |> String.split()

        assert Integer.to_string(os_pid) in tasks

        ProtonStream.command(ps, "go\n")
        assert_receive {:EXIT, ^ps, :normal}, 10_000
        # The exit is reported after the group was removed.
        refute File.exists?(cgroup_dir("cpu", cg <> path))
        refute File.exists?(cgroup_dir("memory", cg <> path))
      end

      test "the group is gone when {:EXIT, ps, _} comes, though the program left children behind",
           %{base: base, m: m, cg: cg} do
        for _ <- 1..5 do
          path = base <> "/" <> rand_hex()

          {:ok, ps} =
            ProtonStream.open(
              "sh",
              ["-c", "sleep 1000 & sleep 1000 & echo ready; read line"],
              [cgroup_controllers: ["cpu", "memory"], cgroup_path: path] ++ m
            )

          assert_receive {^ps, {:data, "ready\n"}}, 10_000
          assert File.dir?(cgroup_dir("memory", cg <> path))
          ProtonStream.command(ps, "go\n")
          assert_receive {:EXIT, ^ps, :normal}, 10_000
          refute File.exists?(cgroup_dir("cpu", cg <> path))
          refute File.exists?(cgroup_dir("memory", cg <> path))
        end
      end

      test ":cgroup_base: a fresh group per process, removed when closed", %{
        base: base,
        m: m,
        cg: cg
      } do
        opts = [cgroup_controllers: ["memory"], cgroup_base: base] ++ m
        {:ok, ps1} = ProtonStream.open("sleep", ["1000"], opts)
        {:ok, ps2} = ProtonStream.open("sleep", ["1000"], opts)
        "/" <> group1 = cgroup_of(ProtonStream.os_pid(ps1), "memory")
        "/" <> group2 = cgroup_of(ProtonStream.os_pid(ps2), "memory")
        assert group1 =~ ~r"\A#{cg}#{base}/[0-9a-f]{8}\z"
        assert group2 =~ ~r"\A#{cg}#{base}/[0-9a-f]{8}\z"
        assert group1 != group2

        ProtonStream.close(ps1)
        ProtonStream.close(ps2)
        assert_receive {^ps1, :closed}
        assert_receive {^ps2, :closed}
        assert wait_until(fn -> not File.exists?(cgroup_dir("memory", group1)) end, 2000)
        assert wait_until(fn -> not File.exists?(cgroup_dir("memory", group2)) end, 2000)
      end

      test ":cgroup_sets are written before the program starts", %{base: base, m: m} do
        script =
          "cat /sys/fs/cgroup/memory$(grep :memory: /proc/self/cgroup | cut -d: -f3)/memory.limit_in_bytes"

        {:ok, ps} =
          ProtonStream.open(
            "sh",
            ["-c", script],
            [
              cgroup_controllers: ["memory"],
              cgroup_base: base,
              cgroup_sets: [{"memory", "memory.limit_in_bytes", 100 * 1024 * 1024}]
            ] ++ m
          )

        assert %{stdout: "104857600\n", exit: :normal} = collect(ps)
      end

      test "a cgroup that cannot be created: {:error, {:spawn_error, :badcgroup, message}}",
           %{m: m} do
        assert {:error, {:spawn_error, :badcgroup, message}} =
                 ProtonStream.open(
                   "true",
                   [],
                   [cgroup_controllers: ["no_such_controller"], cgroup_path: "proton_stream_x"] ++
                     m
                 )

        assert is_binary(message)
      end

      test "a cgroup setting that cannot be written: {:error, {:spawn_error, :badcgroup, _}}",
           %{base: base, m: m} do
        assert {:error, {:spawn_error, :badcgroup, _}} =
                 ProtonStream.open(
                   "true",
                   [],
                   [
                     cgroup_controllers: ["memory"],
                     cgroup_base: base,
                     cgroup_sets: [{"memory", "memory.no_such_knob", "1"}]
                   ] ++ m
                 )
      end
    end
  end
end
