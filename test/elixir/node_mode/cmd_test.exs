defmodule ProtonStreamTest.NodeMode.CmdTest do
  # ProtonStream.cmd/3 and stream!/3 on the suite's ps_port node: the same
  # tests as port mode.
  use ExUnit.Case, async: false
  @moduletag :node
  use ProtonStreamTest.Cases.Cmd, mode: :node
end
