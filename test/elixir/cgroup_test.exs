defmodule ProtonStreamTest.CgroupTest do
  # cgroup options through the shared ps_port (support/cgroup_cases.exs) and
  # ProtonStream.Cgroups. Needs root (cgcreate); a non-root developer runs
  # `mix test --exclude cgroup`.
  use ExUnit.Case, async: true
  use ProtonStreamTest.Cases.Cgroup, mode: :shared

  alias ProtonStream.Cgroups

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
end
