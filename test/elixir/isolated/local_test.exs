defmodule ProtonStreamTest.Isolated.LocalTest do
  # The local tests (support/local_cases.exs) with isolated: true: a ps_port
  # of its own per program.
  use ExUnit.Case, async: false
  @moduletag :isolated
  use ProtonStreamTest.Cases.Local, mode: :isolated
end
