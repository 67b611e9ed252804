defmodule ProtonStreamTest.CgroupTest do
  # cgroup options and ProtonStream.Cgroups. Needs root (cgcreate); a non-root
  # developer runs `mix test --exclude cgroup`.
  use ExUnit.Case, async: true

  import ProtonStreamTest.Helpers

  alias ProtonStream.Cgroups

  @moduletag :cgroup

  setup do
    Process.flag(:trap_exit, true)
    %{base: create_cgroup!(["memory", "cpu"])}
  end

  test "cgroups_enabled?/0 and get_controllers/0" do
    assert Cgroups.cgroups_enabled?()
    {:ok, controllers} = Cgroups.get_controllers()
    assert "cpu" in controllers
    assert "memory" in controllers
    assert controllers == Enum.sort(Enum.uniq(controllers))
  end

  test "cgget/3 and cgset/4 read and write a cgroup's files", %{base: base} do
    assert {:ok, ""} = Cgroups.cgget("memory", base, "tasks")
    assert :ok = Cgroups.cgset("cpu", base, "cpu.shares", "512")
    assert {:ok, "512\n"} = Cgroups.cgget("cpu", base, "cpu.shares")
    assert {:error, :enoent} = Cgroups.cgget("cpu", base <> "/missing", "cpu.shares")
    assert {:error, _} = Cgroups.cgset("cpu", base, "cpu.shares", "not a number")
  end

  test ":cgroup_path: the program and its children run in the group, which is removed after exit",
       %{base: base} do
    path = base <> "/fixed"

    {:ok, ps} =
      ProtonStream.open("sh", ["-c", "sleep 1000 & echo ready; read line; kill $!"],
        cgroup_controllers: ["cpu", "memory"],
        cgroup_path: path
      )

    assert_receive {^ps, {:data, "ready\n"}}, 2000
    os_pid = ProtonStream.os_pid(ps)
    assert cgroup_of(os_pid, "cpu") == "/" <> path
    assert cgroup_of(os_pid, "memory") == "/" <> path
    [sleep] = os_descendants(os_pid)
    assert cgroup_of(sleep, "memory") == "/" <> path

    tasks =
      cgroup_dir("memory", path) |> Path.join("cgroup.procs") |> File.read!() |> String.split()

    assert Integer.to_string(os_pid) in tasks

    ProtonStream.command(ps, "go\n")
    assert_receive {:EXIT, ^ps, :normal}, 2000
    # The exit is reported after ps_port removed the group.
    refute File.exists?(cgroup_dir("cpu", path))
    refute File.exists?(cgroup_dir("memory", path))
  end

  test ":cgroup_base: a fresh group per process, removed when closed", %{base: base} do
    opts = [cgroup_controllers: ["memory"], cgroup_base: base]
    {:ok, ps1} = ProtonStream.open("sleep", ["1000"], opts)
    {:ok, ps2} = ProtonStream.open("sleep", ["1000"], opts)
    "/" <> group1 = cgroup_of(ProtonStream.os_pid(ps1), "memory")
    "/" <> group2 = cgroup_of(ProtonStream.os_pid(ps2), "memory")
    assert group1 =~ ~r"\A#{base}/[0-9a-f]{8}\z"
    assert group2 =~ ~r"\A#{base}/[0-9a-f]{8}\z"
    assert group1 != group2

    ProtonStream.close(ps1)
    ProtonStream.close(ps2)
    assert_receive {^ps1, :closed}
    assert_receive {^ps2, :closed}
    assert wait_until(fn -> not File.exists?(cgroup_dir("memory", group1)) end, 2000)
    assert wait_until(fn -> not File.exists?(cgroup_dir("memory", group2)) end, 2000)
  end

  test ":cgroup_sets are written before the program starts", %{base: base} do
    {:ok, ps} =
      ProtonStream.open(
        "sh",
        [
          "-c",
          "cat /sys/fs/cgroup/memory$(grep :memory: /proc/self/cgroup | cut -d: -f3)/memory.limit_in_bytes"
        ],
        cgroup_controllers: ["memory"],
        cgroup_base: base,
        cgroup_sets: [{"memory", "memory.limit_in_bytes", 100 * 1024 * 1024}]
      )

    assert %{stdout: "104857600\n", exit: :normal} = collect(ps)
  end

  test "a cgroup that cannot be created: {:error, {:spawn_error, :badcgroup, message}}" do
    assert {:error, {:spawn_error, :badcgroup, message}} =
             ProtonStream.open("true", [],
               cgroup_controllers: ["no_such_controller"],
               cgroup_path: "proton_stream_x"
             )

    assert is_binary(message)
  end

  test "a cgroup setting that cannot be written: {:error, {:spawn_error, :badcgroup, _}}", %{
    base: base
  } do
    assert {:error, {:spawn_error, :badcgroup, _}} =
             ProtonStream.open("true", [],
               cgroup_controllers: ["memory"],
               cgroup_base: base,
               cgroup_sets: [{"memory", "memory.no_such_knob", "1"}]
             )
  end
end
