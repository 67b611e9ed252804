defmodule ProtonStreamTest.Isolated.ExitTest do
  # The exit tests (support/exit_cases.exs) with isolated: true: a ps_port
  # of its own per program.
  use ExUnit.Case, async: false
  @moduletag :isolated
  use ProtonStreamTest.Cases.Exit, mode: :isolated
end
