defmodule ProtonStreamTest.Isolated.OptionsTest do
  # The options tests (support/option_cases.exs) with isolated: true: a ps_port
  # of its own per program.
  use ExUnit.Case, async: true
  @moduletag :isolated
  use ProtonStreamTest.Cases.Options, mode: :isolated
end
