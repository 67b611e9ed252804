defmodule ProtonStreamTest.Isolated.PtyTest do
  # pty: true (support/pty_cases.exs) with isolated: true.
  use ExUnit.Case, async: true
  @moduletag :isolated
  use ProtonStreamTest.Cases.Pty, mode: :isolated
end
