defmodule ProtonStreamTest.PtyTest do
  # pty: true through the VM's shared ps_port (support/pty_cases.exs).
  use ExUnit.Case, async: true
  use ProtonStreamTest.Cases.Pty, mode: :shared
end
