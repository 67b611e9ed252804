defmodule ProtonStreamTest.NodeMode.CgroupTest do
  # cgroup options on the suite's ps_port node (started with --cgroup-base):
  # the same tests as port mode.
  use ExUnit.Case, async: true
  @moduletag :node
  use ProtonStreamTest.Cases.Cgroup, mode: :node
end
