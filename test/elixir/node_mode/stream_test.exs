defmodule ProtonStreamTest.NodeMode.StreamTest do
  # Output fidelity and flow control on the suite's ps_port node: the same
  # tests as port mode.
  use ExUnit.Case, async: true
  @moduletag :node
  use ProtonStreamTest.Cases.Stream, mode: :node
end
