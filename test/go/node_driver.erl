%% The Erlang side of test/go/node_test.go: a line-oriented evaluator that the
%% Go test drives through stdin, plus helpers for talking to a ps_port node.
%% Every line read is one Erlang expression sequence ending in '.'; its value
%% is printed as "=> Term" on one line, an exception as "!! Class:Reason".
%% Bindings persist from line to line, and the helpers below can be called
%% without the module prefix. Evaluation runs in one long-lived process, which
%% is therefore the owner of whatever it opens.
-module(node_driver).
-export([main/0, ps_node/0, seq_check_ack/3, flood_owner/5, open_many/1, close_many/1, mailbox_bytes/1, count_bytes/3, open/2, open/3, open_as/4, os_pid/1, collect/1, collect/2,
         drain_exit/2, seq_check/3, spawn_owner/3, flush/0, wait_msg/2]).

main() ->
    [PsNode | _] = init:get_plain_arguments(),
    persistent_term:put(ps_node, list_to_atom(PsNode)),
    io:format("ready~n"),
    loop(erl_eval:new_bindings()).

loop(B) ->
    case io:get_line(standard_io, "") of
        eof -> halt(0);
        {error, _} -> halt(1);
        Line ->
            B2 = try
                     {ok, Toks, _} = erl_scan:string(Line),
                     {ok, Exprs} = erl_parse:parse_exprs(Toks),
                     Local = {value, fun(Name, Args) -> apply(?MODULE, Name, Args) end},
                     {value, V, NB} = erl_eval:exprs(Exprs, B, Local),
                     io:format("=> ~0tp~n", [V]),
                     NB
                 catch C:R ->
                     io:format("!! ~0tp:~0tp~n", [C, R]),
                     B
                 end,
            loop(B2)
    end.

ps_node() -> persistent_term:get(ps_node).

open(Cmd, Args) -> open(Cmd, Args, []).
open(Cmd, Args, Opts) -> open_as(Cmd, Args, Opts, self()).
open_as(Cmd, Args, Opts, Owner) ->
    gen_server:call({proton_stream, ps_node()}, {open, Cmd, Args, Opts, Owner}, 30000).

os_pid(P) -> gen_server:call(P, '$os_pid', 10000).

%% collect(P) gathers what P sends until its exit message:
%% {StdoutBinary, StderrBinary, Other, ExitReason}.
collect(P) -> collect(P, 20000).
collect(P, Timeout) -> collect(P, Timeout, [], [], []).
collect(P, Timeout, Out, Err, Other) ->
    receive
        {P, {data, D}} -> collect(P, Timeout, [Out, D], Err, Other);
        {P, {error, D}} when is_binary(D) -> collect(P, Timeout, Out, [Err, D], Other);
        {P, M} -> collect(P, Timeout, Out, Err, [M | Other]);
        {'EXIT', P, R} ->
            {iolist_to_binary(Out), iolist_to_binary(Err), lists:reverse(Other), R}
    after Timeout ->
        {timeout, iolist_to_binary(Out), iolist_to_binary(Err), lists:reverse(Other)}
    end.

%% drain_exit(P, Timeout) throws away data and returns the exit reason.
drain_exit(P, Timeout) ->
    receive
        {P, {data, _}} -> drain_exit(P, Timeout);
        {P, {error, _}} -> drain_exit(P, Timeout);
        {'EXIT', P, R} -> R
    after Timeout -> timeout
    end.

%% seq_check(P, N, Timeout): P runs "seq 1 N"; checks that every line
%% arrives in order, then the exit. Returns {ok, Messages, Micros} or a
%% description of the first difference.
seq_check(P, N, Timeout) -> seq_check(P, N, Timeout, false).

%% seq_check_ack: like seq_check, acking each message's bytes (flow: ack).
seq_check_ack(P, N, Timeout) -> seq_check(P, N, Timeout, true).

seq_check(P, N, Timeout, Ack) ->
    T0 = erlang:monotonic_time(microsecond),
    Want = iolist_to_binary([[integer_to_list(I), $\n] || I <- lists:seq(1, N)]),
    case seq_collect(P, Timeout, Ack, [], 0) of
        {ok, Got, Msgs, normal} when Got =:= Want ->
            {ok, Msgs, erlang:monotonic_time(microsecond) - T0};
        {ok, Got, Msgs, R} ->
            {mismatch, byte_size(Got), byte_size(Want), Msgs, R, first_diff(Got, Want, 0)};
        Other -> Other
    end.

seq_collect(P, Timeout, Ack, Acc, Msgs) ->
    receive
        {P, {data, D}} ->
            Ack andalso (P ! {self(), {ack, byte_size(D)}}),
            seq_collect(P, Timeout, Ack, [Acc, D], Msgs + 1);
        {'EXIT', P, R} -> {ok, iolist_to_binary(Acc), Msgs, R};
        {P, Other} -> {unexpected, Other}
    after Timeout -> {timeout, iolist_size(Acc)}
    end.

first_diff(<<C, A/binary>>, <<C, B/binary>>, I) -> first_diff(A, B, I + 1);
first_diff(_, _, I) -> I.

%% spawn_owner(Cmd, Args, Opts): a process that opens Cmd and then waits; it
%% returns {OwnerPid, ChildPid, OsPid}.
spawn_owner(Cmd, Args, Opts) ->
    Parent = self(),
    Owner = spawn(fun() ->
                          {ok, P} = open(Cmd, Args, Opts),
                          Parent ! {self(), P, os_pid(P)},
                          receive stop -> ok end
                  end),
    receive {Owner, P, OsPid} -> {Owner, P, OsPid}
    after 20000 -> exit(spawn_owner_timeout)
    end.

flush() ->
    receive M -> [M | flush()] after 0 -> [] end.

%% wait_msg(Pattern, Timeout): the first message for which Pattern(M) is true.
wait_msg(Pred, Timeout) ->
    receive M ->
            case Pred(M) of
                true -> M;
                false -> wait_msg(Pred, Timeout)
            end
    after Timeout -> timeout
    end.


%% open_many(N): N processes each open cat, echo their number through it
%% and keep it open. Returns {ok, Workers} with Workers [{W, P, OsPid}], or
%% the first bad echo.
open_many(N) ->
    Parent = self(),
    Ws = [spawn(fun() -> worker(Parent, I) end) || I <- lists:seq(1, N)],
    Rs = [receive {W, R} -> R after 60000 -> {W, timeout} end || W <- Ws],
    case [R || R <- Rs, element(1, R) =/= ok] of
        [] -> {ok, [{W, P, OsPid} || {ok, W, P, OsPid} <- Rs]};
        [Bad | _] -> Bad
    end.

worker(Parent, I) ->
    case open(<<"cat">>, []) of
        {ok, P} ->
            Line = <<(integer_to_binary(I))/binary, "\n">>,
            P ! {self(), {command, Line}},
            receive
                {P, {data, Line}} -> Parent ! {self(), {ok, self(), P, os_pid(P)}};
                {P, Other} -> Parent ! {self(), {bad_echo, I, Other}}
            after 30000 -> Parent ! {self(), {echo_timeout, I}}
            end,
            receive {close, From} ->
                    P ! {self(), close},
                    From ! {self(), collect(P)}
            end;
        Error -> Parent ! {self(), {open_failed, I, Error}}
    end.

%% close_many(Workers): closes every worker's child; returns how many
%% ended as a close should.
close_many(Ws) ->
    [W ! {close, self()} || {W, _, _} <- Ws],
    length([ok || {W, _, _} <- Ws,
                  receive {W, {<<>>, <<>>, [closed], normal}} -> true
                  after 30000 -> false end]).

%% mailbox_bytes(P): data bytes from P waiting in this process's mailbox.
mailbox_bytes(P) ->
    {messages, Ms} = process_info(self(), messages),
    lists:sum([byte_size(D) || {P1, {data, D}} <- Ms, P1 =:= P]).

%% count_bytes(P, Ack, Timeout): drains P, acking when Ack; returns
%% {Bytes, Reason, Micros}.
count_bytes(P, Ack, Timeout) ->
    T0 = erlang:monotonic_time(microsecond),
    count_bytes(P, Ack, Timeout, 0, T0).
count_bytes(P, Ack, Timeout, N, T0) ->
    receive
        {P, {data, D}} ->
            Ack andalso (P ! {self(), {ack, byte_size(D)}}),
            count_bytes(P, Ack, Timeout, N + byte_size(D), T0);
        {'EXIT', P, R} -> {N, R, erlang:monotonic_time(microsecond) - T0}
    after Timeout -> {timeout, N}
    end.

%% flood_owner(Cmd, Args, Opts, N, Size): a process that opens Cmd, tells
%% the caller the OS pid, then sends N commands of Size bytes as fast as it
%% can and waits. Returns {Owner, P, OsPid} once the sending is done.
flood_owner(Cmd, Args, Opts, N, Size) ->
    Parent = self(),
    Owner = spawn(fun() ->
                          {ok, P} = open(Cmd, Args, Opts),
                          OsPid = os_pid(P),
                          B = binary:copy(<<"z">>, Size),
                          [P ! {self(), {command, B}} || _ <- lists:seq(1, N)],
                          Parent ! {self(), P, OsPid},
                          receive stop -> ok end
                  end),
    receive {Owner, P, OsPid} -> {Owner, P, OsPid}
    after 60000 -> exit(flood_owner_timeout)
    end.
