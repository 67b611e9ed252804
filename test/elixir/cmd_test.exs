defmodule ProtonStreamTest.CmdTest do
  # ProtonStream.cmd/3 and stream!/3 through the VM's shared ps_port (support/cmd_cases.exs).
  use ExUnit.Case, async: false
  use ProtonStreamTest.Cases.Cmd, mode: :shared
end
