defmodule ProtonStreamTest.Isolated.CallbackTest do
  # The callback tests (support/callback_cases.exs) with isolated: true: a ps_port
  # of its own per program.
  use ExUnit.Case, async: true
  @moduletag :isolated
  use ProtonStreamTest.Cases.Callback, mode: :isolated
end
