defmodule ProtonStreamTest.PtyTest do
  # pty: true through a port (support/pty_cases.exs).
  use ExUnit.Case, async: true
  use ProtonStreamTest.Cases.Pty, mode: :port
end
