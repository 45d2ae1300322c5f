//! The `AgentRouter`: takes admitted channel messages (`DeliverToAgent`), runs a turn on the
//! agent, and queues the reply in the channel's durable outbox.
//!
//! Owns: the mapping from a channel message to a turn and back to a reply, and the hand-over
//! of messages that get no turn (reactions, system events: [`NoteInSession`]).
//! Must not: send over HTTP (the channel's dispatcher does) or decide access (the channel did).
//!
//! It answers the channel only after the reply is queued durably, so a crash before that hands
//! the message over again. That is safe: the turn is keyed on channel + message id, so the
//! agent answers a finished turn from its journal without asking the model, resumes an
//! interrupted one from its last journaled step, and the outbox refuses a second reply to the
//! same message. Turns run at most once per message; replies are queued exactly once.
//! A turn the agent refuses because the gateway is stopping is refused to the channel, which
//! keeps the message pending for the next start.

use std::collections::HashMap;

use actix::prelude::*;

use super::{Agent, AgentError, NoteInSession, RunTurn, TurnKey};
use crate::channel::actor::{ChannelBridge, DeliverToAgent, DeliveryRefused, EnqueueReply};
use crate::channel::dispatch::{DispatchNow, Dispatcher};
use crate::channel::outbox::Enqueued;
use crate::channel::outbox::OutboundMessage;
use crate::supervisor::{Ping, Pong, Slot};

/// Routes channel messages to the agent and replies back to their channel.
pub struct AgentRouter {
    agent: Slot<Agent>,
    channels: HashMap<String, Slot<ChannelBridge>>,
    dispatchers: HashMap<String, Slot<Dispatcher>>,
}

impl AgentRouter {
    /// A router over the agent, every channel and its dispatcher, by channel name.
    pub fn new(
        agent: Slot<Agent>,
        channels: HashMap<String, Slot<ChannelBridge>>,
        dispatchers: HashMap<String, Slot<Dispatcher>>,
    ) -> Self {
        Self {
            agent,
            channels,
            dispatchers,
        }
    }
}

impl Actor for AgentRouter {
    type Context = Context<Self>;
}

impl Handler<Ping> for AgentRouter {
    type Result = Pong;
    fn handle(&mut self, _: Ping, _: &mut Context<Self>) -> Pong {
        Pong
    }
}

impl Handler<DeliverToAgent> for AgentRouter {
    type Result = ResponseFuture<Result<(), DeliveryRefused>>;

    fn handle(&mut self, msg: DeliverToAgent, _: &mut Context<Self>) -> Self::Result {
        let agent = self.agent.addr();
        let channel = self.channels.get(&msg.channel).and_then(Slot::addr);
        let dispatcher = self.dispatchers.get(&msg.channel).and_then(Slot::addr);
        Box::pin(async move {
            let agent = agent.ok_or_else(|| DeliveryRefused("the agent is not running".into()))?;
            let channel = channel.ok_or_else(|| {
                DeliveryRefused(format!("channel {} is not running", msg.channel))
            })?;
            if !msg.respond {
                return note(&agent, &msg).await;
            }
            let turn = RunTurn {
                session: msg.session_key.clone(),
                sender: msg.sender_kind,
                sender_id: msg.sender_id.clone(),
                channel: msg.channel.clone(),
                text: msg.text.clone(),
                trace_id: msg.trace_id.clone(),
                turn_key: Some(TurnKey::message(&msg.channel, &msg.message_id)),
            };
            let text = match agent.send(turn).await {
                Ok(Ok(reply)) => reply.reply,
                // The user is told which limit was hit, or that the model failed (clean text).
                Ok(Err(AgentError::Budget(why))) => why,
                Ok(Err(AgentError::Provider(why))) => {
                    format!("Sorry, the assistant is unavailable right now ({why}).")
                }
                Ok(Err(AgentError::NoProvider)) => {
                    // Warned about once at startup; per message this would flood the log.
                    tracing::debug!(channel = %msg.channel, "no model provider configured; message stored but not answered");
                    return Ok(());
                }
                Ok(Err(AgentError::ShuttingDown)) => {
                    return Err(DeliveryRefused("the gateway is shutting down".into()));
                }
                Ok(Err(AgentError::Internal(why))) => {
                    tracing::error!(channel = %msg.channel, %why, "turn failed");
                    return Err(DeliveryRefused("the turn failed".into()));
                }
                Ok(Err(AgentError::KeyReused(why))) => {
                    // A message id the channel stored once cannot change its text; refuse.
                    tracing::error!(channel = %msg.channel, %why, "turn key reused");
                    return Err(DeliveryRefused("the turn key was reused".into()));
                }
                Err(_) => return Err(DeliveryRefused("the agent is not running".into())),
            };
            let reply = OutboundMessage {
                to: msg.chat_id.clone(),
                text,
                reply_to: Some(msg.message_id.clone()),
                session: Some(msg.session_key.clone()),
            };
            match channel.send(EnqueueReply { message: reply }).await {
                Ok(Ok(Enqueued::New(_))) => {
                    // Send now rather than at the next poll. A full mailbox already holds
                    // wake-ups (the dispatcher reads the outbox itself): drop, never queue.
                    if let Some(dispatcher) = dispatcher {
                        let _ = dispatcher.try_send(DispatchNow);
                    }
                    Ok(())
                }
                // Queued by an earlier hand-over of this message: nothing more to do.
                Ok(Ok(Enqueued::Duplicate(_))) => Ok(()),
                _ => Err(DeliveryRefused("the reply could not be queued".into())),
            }
        })
    }
}

/// Notes a message that gets no turn (a reaction, a system event) in its session.
async fn note(agent: &Addr<Agent>, msg: &DeliverToAgent) -> Result<(), DeliveryRefused> {
    let note = NoteInSession {
        session: msg.session_key.clone(),
        sender: msg.sender_kind,
        sender_id: msg.sender_id.clone(),
        channel: msg.channel.clone(),
        text: msg.text.clone(),
        trace_id: msg.trace_id.clone(),
        turn_key: TurnKey::message(&msg.channel, &msg.message_id),
    };
    match agent.send(note).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(AgentError::ShuttingDown)) => {
            Err(DeliveryRefused("the gateway is shutting down".into()))
        }
        Ok(Err(error)) => {
            tracing::error!(channel = %msg.channel, %error, "message not noted");
            Err(DeliveryRefused("the message could not be noted".into()))
        }
        Err(_) => Err(DeliveryRefused("the agent is not running".into())),
    }
}
