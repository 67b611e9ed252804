defmodule ProtonStreamTest.Isolated.StreamTest do
  # The stream tests (support/stream_cases.exs) with isolated: true: a ps_port
  # of its own per program.
  use ExUnit.Case, async: true
  @moduletag :isolated
  use ProtonStreamTest.Cases.Stream, mode: :isolated
end
