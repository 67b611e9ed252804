defmodule ProtonStreamTest.NodeMode.OptionsTest do
  # What every option does to a program on the suite's ps_port node: the
  # same tests as port mode.
  use ExUnit.Case, async: true
  @moduletag :node
  use ProtonStreamTest.Cases.Options, mode: :node
end
