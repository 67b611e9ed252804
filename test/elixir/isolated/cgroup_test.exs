defmodule ProtonStreamTest.Isolated.CgroupTest do
  # The cgroup tests (support/cgroup_cases.exs; needs root) with isolated: true: a ps_port
  # of its own per program.
  use ExUnit.Case, async: true
  @moduletag :isolated
  use ProtonStreamTest.Cases.Cgroup, mode: :isolated
end
