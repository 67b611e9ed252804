defmodule ProtonStreamTest.Isolated.CmdTest do
  # ProtonStream.cmd/3 and stream!/3 (support/cmd_cases.exs) with
  # isolated: true: a ps_port of its own per program.
  use ExUnit.Case, async: false
  @moduletag :isolated
  use ProtonStreamTest.Cases.Cmd, mode: :isolated
end
