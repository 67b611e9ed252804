defmodule ProtonStreamTest.NodeMode.SpawnErrorsTest do
  # Spawn errors in words on the suite's ps_port node: the same tests as
  # port mode.
  use ExUnit.Case, async: true
  @moduletag :node
  use ProtonStreamTest.Cases.SpawnErrors, mode: :node
end
