defmodule ProtonStreamTest.NodeMode.PtyTest do
  # pty: true on the suite's ps_port node: the same tests as port mode.
  use ExUnit.Case, async: true
  @moduletag :node
  use ProtonStreamTest.Cases.Pty, mode: :node
end
