defmodule ProtonStreamTest.DaemonTest do
  # ProtonStream.Daemon, child_spec/1, the :cgroup map, statistics and the
  # OOM notice through the VM's shared ps_port (support/daemon_cases.exs).
  use ExUnit.Case, async: true
  use ProtonStreamTest.Cases.Daemon, mode: :shared
end
