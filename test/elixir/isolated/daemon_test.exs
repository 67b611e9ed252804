defmodule ProtonStreamTest.Isolated.DaemonTest do
  # ProtonStream.Daemon, the :cgroup map, statistics and the OOM notice
  # (support/daemon_cases.exs) with isolated: true.
  use ExUnit.Case, async: true
  @moduletag :isolated
  use ProtonStreamTest.Cases.Daemon, mode: :isolated
end
