defmodule ProtonStreamTest.NodeMode.MessagesTest do
  # Message mode on the suite's ps_port node: the same tests as port mode.
  use ExUnit.Case, async: true
  @moduletag :node
  use ProtonStreamTest.Cases.Messages, mode: :node
end
