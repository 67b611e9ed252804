defmodule ProtonStreamTest.NodeMode.CallbackTest do
  # Callback module mode on the suite's ps_port node: the same tests as port mode.
  use ExUnit.Case, async: true
  @moduletag :node
  use ProtonStreamTest.Cases.Callback, mode: :node
end
