defmodule ProtonStreamTest.Isolated.MessagesTest do
  # The messages tests (support/messages_cases.exs) with isolated: true: a ps_port
  # of its own per program.
  use ExUnit.Case, async: true
  @moduletag :isolated
  use ProtonStreamTest.Cases.Messages, mode: :isolated
end
