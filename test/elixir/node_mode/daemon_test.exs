defmodule ProtonStreamTest.NodeMode.DaemonTest do
  # ProtonStream.Daemon, child_spec/1, the :cgroup map, statistics and the
  # OOM notice on the suite's ps_port node: the same tests as port mode.
  use ExUnit.Case, async: true
  @moduletag :node
  use ProtonStreamTest.Cases.Daemon, mode: :node
end
