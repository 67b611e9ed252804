defmodule ProtonStreamTest.NodeMode.ExitTest do
  # Exit reasons, spawn errors and the owner-killed contract on the suite's
  # ps_port node: the same tests as port mode.
  use ExUnit.Case, async: false
  @moduletag :node
  use ProtonStreamTest.Cases.Exit, mode: :node
end
