use crate::protocol::{
    Filter, LastWill, LastWillProperties, Packet, PubAckReason, Publish, QoS, RetainForwardRule,
    Subscribe, Unsubscribe,
};
use crate::router::Ack;
use crate::router::{
    iobufs::{Incoming, Outgoing},
    Connection, Event, Notification, ShadowRequest,
};
use crate::{Authorizer, ConnectionId};
use bytes::Bytes;
use flume::{Receiver, RecvError, RecvTimeoutError, SendError, Sender, TrySendError};
use parking_lot::lock_api::MutexGuard;
use parking_lot::{Mutex, RawMutex};

use std::collections::VecDeque;
use std::mem;
use std::sync::Arc;
use std::time::Instant;

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("Unexpected router message")]
    NotConnectionAck,
    #[error("ConnAck error {0}")]
    ConnectionAck(String),
    #[error("Channel try send error")]
    TrySend(#[from] TrySendError<(ConnectionId, Event)>),
    #[error("Channel send error")]
    Send(#[from] SendError<(ConnectionId, Event)>),
    #[error("Channel recv error")]
    Recv(#[from] RecvError),
    #[error("Channel timeout recv error")]
    RecvTimeout(#[from] RecvTimeoutError),
    #[error("Timeout = {0}")]
    Elapsed(#[from] tokio::time::error::Elapsed),
}

// used to build LinkTx and LinkRx
pub struct LinkBuilder<'a> {
    tenant_id: Option<String>,
    client_id: &'a str,
    router_tx: Sender<(ConnectionId, Event)>,
    // true by default
    clean_session: bool,
    last_will: Option<LastWill>,
    last_will_properties: Option<LastWillProperties>,
    // false by default
    dynamic_filters: bool,
    // default to 0, indicating to not use topic alias
    topic_alias_max: u16,
    // None by default: in-process links are not checked
    authorizer: Option<Authorizer>,
}

impl<'a> LinkBuilder<'a> {
    pub fn new(client_id: &'a str, router_tx: Sender<(ConnectionId, Event)>) -> Self {
        LinkBuilder {
            client_id,
            router_tx,
            tenant_id: None,
            clean_session: true,
            last_will: None,
            last_will_properties: None,
            dynamic_filters: false,
            topic_alias_max: 0,
            authorizer: None,
        }
    }

    pub fn authorizer(mut self, authorizer: Option<Authorizer>) -> Self {
        self.authorizer = authorizer;
        self
    }

    pub fn tenant_id(mut self, tenant_id: Option<String>) -> Self {
        self.tenant_id = tenant_id;
        self
    }

    pub fn last_will(mut self, last_will: Option<LastWill>) -> Self {
        self.last_will = last_will;
        self
    }

    pub fn last_will_properties(
        mut self,
        last_will_properties: Option<LastWillProperties>,
    ) -> Self {
        self.last_will_properties = last_will_properties;
        self
    }

    pub fn topic_alias_max(mut self, max: u16) -> Self {
        self.topic_alias_max = max;
        self
    }

    pub fn clean_session(mut self, clean: bool) -> Self {
        self.clean_session = clean;
        self
    }

    pub fn dynamic_filters(mut self, dynamic_filters: bool) -> Self {
        self.dynamic_filters = dynamic_filters;
        self
    }

    pub fn build(self) -> Result<(LinkTx, LinkRx, Notification), LinkError> {
        // Connect to router
        // Local connections to the router shall have access to all subscriptions
        let mut connection = Connection::new(
            self.tenant_id,
            self.client_id.to_owned(),
            self.clean_session,
            self.dynamic_filters,
        );

        connection
            .last_will(self.last_will, self.last_will_properties)
            .topic_alias_max(self.topic_alias_max);
        connection.authorizer = self.authorizer;
        let incoming = Incoming::new(connection.client_id.to_owned());
        let (outgoing, link_rx) = Outgoing::new(connection.client_id.to_owned());
        let outgoing_data_buffer = outgoing.buffer();
        let incoming_data_buffer = incoming.buffer();

        let event = Event::Connect {
            connection,
            incoming,
            outgoing,
        };

        self.router_tx.send((0, event))?;

        link_rx.recv()?;
        let notification = outgoing_data_buffer.lock().pop_front().unwrap();

        // Right now link identifies failure with dropped rx in router,
        // which is probably ok. We need this here to get id assigned by router
        let id = match notification {
            Notification::DeviceAck(Ack::ConnAck(id, ..)) => id,
            _message => return Err(LinkError::NotConnectionAck),
        };

        let tx = LinkTx::new(id, self.router_tx.clone(), incoming_data_buffer);
        let rx = LinkRx::new(id, self.router_tx, link_rx, outgoing_data_buffer);
        Ok((tx, rx, notification))
    }
}

pub struct LinkTx {
    pub(crate) connection_id: ConnectionId,
    router_tx: Sender<(ConnectionId, Event)>,
    recv_buffer: Arc<Mutex<VecDeque<Packet>>>,
}

impl LinkTx {
    pub fn new(
        connection_id: ConnectionId,
        router_tx: Sender<(ConnectionId, Event)>,
        recv_buffer: Arc<Mutex<VecDeque<Packet>>>,
    ) -> LinkTx {
        LinkTx {
            connection_id,
            router_tx,
            recv_buffer,
        }
    }

    pub fn buffer(&self) -> MutexGuard<RawMutex, VecDeque<Packet>> {
        self.recv_buffer.lock()
    }

    /// Send raw device data
    fn push(&mut self, data: Packet) -> Result<usize, LinkError> {
        let len = {
            let mut buffer = self.recv_buffer.lock();
            buffer.push_back(data);
            buffer.len()
        };

        self.router_tx
            .send((self.connection_id, Event::DeviceData))?;

        Ok(len)
    }

    /// Send raw device data
    pub async fn send(&mut self, data: Packet) -> Result<usize, LinkError> {
        let len = {
            let mut buffer = self.recv_buffer.lock();
            buffer.push_back(data);
            buffer.len()
        };

        self.router_tx
            .send((self.connection_id, Event::DeviceData))?;

        Ok(len)
    }

    fn try_push(&mut self, data: Packet) -> Result<usize, LinkError> {
        let len = {
            let mut buffer = self.recv_buffer.lock();
            buffer.push_back(data);
            buffer.len()
        };

        self.router_tx
            .try_send((self.connection_id, Event::DeviceData))?;
        Ok(len)
    }

    pub(crate) async fn notify(&mut self) -> Result<(), LinkError> {
        self.router_tx
            .send_async((self.connection_id, Event::DeviceData))
            .await?;

        Ok(())
    }

    /// Sends a MQTT Publish to the router
    pub fn publish<S, V>(&mut self, topic: S, payload: V) -> Result<usize, LinkError>
    where
        S: Into<Bytes>,
        V: Into<Bytes>,
    {
        let publish = Publish {
            dup: false,
            qos: QoS::AtMostOnce,
            retain: false,
            topic: topic.into(),
            pkid: 0,
            payload: payload.into(),
        };

        let len = self.push(Packet::Publish(publish, None))?;
        Ok(len)
    }

    /// Sends a retained MQTT Publish to the router: the router keeps it as the topic's
    /// retained message (an empty payload removes it), and forwards it to subscribers now
    /// and to every later subscription that matches. (mekong patch 21.)
    pub fn publish_retained<S, V>(&mut self, topic: S, payload: V) -> Result<usize, LinkError>
    where
        S: Into<Bytes>,
        V: Into<Bytes>,
    {
        let publish = Publish {
            dup: false,
            qos: QoS::AtMostOnce,
            retain: true,
            topic: topic.into(),
            pkid: 0,
            payload: payload.into(),
        };

        let len = self.push(Packet::Publish(publish, None))?;
        Ok(len)
    }

    /// Sends a MQTT Publish to the router
    pub fn try_publish<S, V>(&mut self, topic: S, payload: V) -> Result<usize, LinkError>
    where
        S: Into<Bytes>,
        V: Into<Bytes>,
    {
        let publish = Publish {
            dup: false,
            qos: QoS::AtMostOnce,
            retain: false,
            topic: topic.into(),
            pkid: 0,
            payload: payload.into(),
        };

        let len = self.try_push(Packet::Publish(publish, None))?;
        // TODO: Remote item in buffer after failure and write unittest
        Ok(len)
    }

    /// Holds the PUBACK of every QoS 1 publish appended to `filter`'s log from now on, until
    /// this link releases it with [`LinkTx::release_acks`]: a client's PUBACK then says that
    /// this link has done what it does with the publish (stored it, say), not only that the
    /// broker has it in memory. A publish the link never releases gets no PUBACK; its client
    /// resends it. (mekong patch 24.)
    pub fn hold_acks<S: Into<String>>(&mut self, filter: S) -> Result<(), LinkError> {
        self.router_tx
            .send((self.connection_id, Event::HoldAcks(filter.into())))?;
        Ok(())
    }

    /// Sends the held PUBACKs of the publishes at these offsets of `filter`'s log (the
    /// second number of [`crate::Forward`]'s cursor), in ascending order, each with its
    /// reason (MQTT 5 clients see it; MQTT 3.1.1 PUBACKs have none). A held PUBACK at an
    /// offset below the last one given that is not given itself is dropped: this link did not
    /// keep that publish, and its client resends. (mekong patch 24.)
    pub fn release_acks<S: Into<String>>(
        &mut self,
        filter: S,
        acks: Vec<(u64, PubAckReason)>,
    ) -> Result<(), LinkError> {
        let event = Event::ReleaseAcks {
            filter: filter.into(),
            acks,
        };
        self.router_tx.send((self.connection_id, event))?;
        Ok(())
    }

    /// Sends a MQTT Subscribe to the eventloop
    pub fn subscribe<S: Into<String>>(&mut self, filter: S) -> Result<usize, LinkError> {
        let filters = vec![Filter {
            path: filter.into(),
            qos: QoS::AtMostOnce,
            nolocal: false,
            preserve_retain: false,
            retain_forward_rule: RetainForwardRule::Never,
        }];

        let subscribe = Subscribe { pkid: 0, filters };

        let len = self.push(Packet::Subscribe(subscribe, None))?;
        Ok(len)
    }

    /// Sends a MQTT Subscribe to the eventloop
    pub fn try_subscribe<S: Into<String>>(&mut self, filter: S) -> Result<usize, LinkError> {
        let filters = vec![Filter {
            path: filter.into(),
            qos: QoS::AtMostOnce,
            nolocal: false,
            preserve_retain: false,
            retain_forward_rule: RetainForwardRule::Never,
        }];

        let subscribe = Subscribe { pkid: 0, filters };

        let len = self.try_push(Packet::Subscribe(subscribe, None))?;
        Ok(len)
    }

    /// Sends a MQTT Unsubscribe to the eventloop
    pub fn unsubscribe<S: Into<String>>(&mut self, filter: S) -> Result<usize, LinkError> {
        let unsubscribe = Unsubscribe {
            pkid: 0,
            filters: vec![filter.into()],
        };

        let len = self.push(Packet::Unsubscribe(unsubscribe, None))?;
        Ok(len)
    }

    /// Sends a MQTT Unsubscribe to the eventloop
    pub fn try_unsubscribe<S: Into<String>>(&mut self, filter: S) -> Result<usize, LinkError> {
        let unsubscribe = Unsubscribe {
            pkid: 0,
            filters: vec![filter.into()],
        };

        let len = self.try_push(Packet::Unsubscribe(unsubscribe, None))?;
        Ok(len)
    }

    /// Request to get device shadow
    pub fn shadow<S: Into<String>>(&mut self, filter: S) -> Result<(), LinkError> {
        let message = Event::Shadow(ShadowRequest {
            filter: filter.into(),
        });

        self.router_tx.try_send((self.connection_id, message))?;
        Ok(())
    }
}

#[derive(Debug)]
pub struct LinkRx {
    connection_id: ConnectionId,
    router_tx: Sender<(ConnectionId, Event)>,
    router_rx: Receiver<()>,
    send_buffer: Arc<Mutex<VecDeque<Notification>>>,
    cache: VecDeque<Notification>,
}

impl LinkRx {
    pub fn new(
        connection_id: ConnectionId,
        router_tx: Sender<(ConnectionId, Event)>,
        router_rx: Receiver<()>,
        outgoing_data_buffer: Arc<Mutex<VecDeque<Notification>>>,
    ) -> LinkRx {
        LinkRx {
            connection_id,
            router_tx,
            router_rx,
            send_buffer: outgoing_data_buffer,
            // mekong: grown on demand. A remote link never uses this cache (it exchanges
            // its own queue), and 100 notifications are about 24 KiB for every connection.
            cache: VecDeque::new(),
        }
    }

    pub fn id(&self) -> ConnectionId {
        self.connection_id
    }

    pub fn recv(&mut self) -> Result<Option<Notification>, LinkError> {
        // Read from cache first
        // One router_rx trigger signifies a bunch of notifications. So we
        // should always check cache first
        match self.cache.pop_front() {
            Some(v) => Ok(Some(v)),
            None => {
                // If cache is empty, check for router trigger and get fresh notifications
                self.router_rx.recv()?;
                // Collect 'all' the data in the buffer after a notification.
                // Notification means fresh data which isn't previously collected
                mem::swap(&mut *self.send_buffer.lock(), &mut self.cache);
                Ok(self.cache.pop_front())
            }
        }
    }

    pub fn recv_deadline(&mut self, deadline: Instant) -> Result<Option<Notification>, LinkError> {
        // Read from cache first
        // One router_rx trigger signifies a bunch of notifications. So we
        // should always check cache first
        match self.cache.pop_front() {
            Some(v) => Ok(Some(v)),
            None => {
                // If cache is empty, check for router trigger and get fresh notifications
                self.router_rx.recv_deadline(deadline)?;
                mem::swap(&mut *self.send_buffer.lock(), &mut self.cache);
                Ok(self.cache.pop_front())
            }
        }
    }

    pub async fn next(&mut self) -> Result<Option<Notification>, LinkError> {
        // Read from cache first
        // One router_rx trigger signifies a bunch of notifications. So we
        // should always check cache first
        match self.cache.pop_front() {
            Some(v) => Ok(Some(v)),
            None => {
                // If cache is empty, check for router trigger and get fresh notifications
                self.router_rx.recv_async().await?;
                // Collect 'all' the data in the buffer after a notification.
                // Notification means fresh data which isn't previously collected
                mem::swap(&mut *self.send_buffer.lock(), &mut self.cache);
                Ok(self.cache.pop_front())
            }
        }
    }

    pub(crate) async fn exchange(
        &mut self,
        notifications: &mut VecDeque<Notification>,
    ) -> Result<(), LinkError> {
        self.router_rx.recv_async().await?;
        mem::swap(&mut *self.send_buffer.lock(), notifications);
        Ok(())
    }

    pub fn ready(&self) -> Result<(), LinkError> {
        self.router_tx.send((self.connection_id, Event::Ready))?;
        Ok(())
    }

    pub async fn wake(&self) -> Result<(), LinkError> {
        self.router_tx
            .send_async((self.connection_id, Event::Ready))
            .await?;

        Ok(())
    }
}

#[cfg(test)]
mod test {
    use super::LinkTx;
    use flume::bounded;
    use parking_lot::Mutex;
    use std::{collections::VecDeque, sync::Arc, thread};

    #[test]
    fn push_sends_all_data_and_notifications_to_router() {
        let (router_tx, router_rx) = bounded(10);
        let mut buffers = Vec::new();
        const CONNECTIONS: usize = 1000;
        const MESSAGES_PER_CONNECTION: usize = 100;

        for i in 0..CONNECTIONS {
            let buffer = Arc::new(Mutex::new(VecDeque::new()));
            let mut link_tx = LinkTx::new(i, router_tx.clone(), buffer.clone());
            buffers.push(buffer);
            thread::spawn(move || {
                for _ in 0..MESSAGES_PER_CONNECTION {
                    link_tx.publish("hello/world", vec![1, 2, 3]).unwrap();
                }
            });
        }

        // Router should receive notifications from all the connections
        for _ in 0..CONNECTIONS * MESSAGES_PER_CONNECTION {
            let _v = router_rx.recv().unwrap();
        }

        // Every connection has expected number of messages
        for item in buffers.iter().take(CONNECTIONS) {
            assert_eq!(item.lock().len(), MESSAGES_PER_CONNECTION);
        }

        // TODO: Write a similar test to benchmark buffer vs channels
    }

    mod held_acks {
        use std::time::{Duration, Instant};

        use crate::link::local::{LinkBuilder, LinkRx, LinkTx};
        use crate::protocol::{Packet, PubAckReason, Publish, QoS};
        use crate::router::{Ack, Event, Notification};
        use crate::{Router, RouterConfig, Strategy};

        const HELD: &str = "up/+";

        fn config() -> RouterConfig {
            RouterConfig {
                max_segment_size: 1024 * 1024,
                max_connections: 10,
                max_segment_count: 10,
                max_outgoing_packet_count: 1024,
                custom_segment: None,
                initialized_filters: None,
                shared_subscriptions_strategy: Strategy::RoundRobin,
            }
        }

        fn publish(tx: &mut LinkTx, topic: &str, pkid: u16) {
            let publish = Publish {
                dup: false,
                qos: QoS::AtLeastOnce,
                retain: false,
                topic: topic.to_owned().into(),
                pkid,
                payload: vec![1, 2, 3].into(),
            };
            tx.push(Packet::Publish(publish, None)).unwrap();
        }

        /// The next PUBACK a link receives (its pkid), skipping other notifications (and
        /// telling the router the link is ready again when it pauses it).
        fn next_puback(rx: &mut LinkRx) -> u16 {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                match rx.recv_deadline(deadline).unwrap() {
                    Some(Notification::DeviceAck(Ack::PubAck(ack))) => return ack.pkid,
                    Some(Notification::Unschedule) => rx.ready().unwrap(),
                    _ => continue,
                }
            }
        }

        /// The log offset of the next publish the holding link reads.
        fn next_offset(rx: &mut LinkRx) -> u64 {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                match rx.recv_deadline(deadline).unwrap() {
                    Some(Notification::Forward(forward)) => return forward.cursor.unwrap().1,
                    Some(Notification::Unschedule) => rx.ready().unwrap(),
                    _ => continue,
                }
            }
        }

        /// Each "nothing before" below is shown by a PUBACK the router sends at once (a
        /// publish on a topic whose PUBACKs nobody holds): the router handles events in order
        /// and acknowledges a connection's publishes in the order it queued the PUBACKs, so
        /// a held PUBACK sent too early would arrive before it.
        #[test]
        fn a_held_puback_goes_out_when_released_to_its_own_connection_only() {
            let router_tx = Router::new(0, config()).spawn();
            let (mut holder, mut holder_rx, _) = LinkBuilder::new("holder", router_tx.clone())
                .build()
                .unwrap();
            holder.hold_acks(HELD).unwrap();
            holder.subscribe(HELD).unwrap();
            let (mut device, mut device_rx, _) = LinkBuilder::new("device", router_tx.clone())
                .build()
                .unwrap();

            // Held until released.
            publish(&mut device, "up/a", 1);
            let first = next_offset(&mut holder_rx);
            publish(&mut device, "elsewhere", 2);
            assert_eq!(
                next_puback(&mut device_rx),
                2,
                "the held PUBACK went out at once"
            );
            holder
                .release_acks(HELD, vec![(first, PubAckReason::Success)])
                .unwrap();
            assert_eq!(next_puback(&mut device_rx), 1);

            // A held PUBACK passed over by a release is dropped; the released one goes out.
            publish(&mut device, "up/a", 3);
            publish(&mut device, "up/a", 4);
            let _third = next_offset(&mut holder_rx);
            let fourth = next_offset(&mut holder_rx);
            holder
                .release_acks(HELD, vec![(fourth, PubAckReason::Success)])
                .unwrap();
            assert_eq!(next_puback(&mut device_rx), 4);
            publish(&mut device, "elsewhere", 5);
            assert_eq!(
                next_puback(&mut device_rx),
                5,
                "the passed-over PUBACK went out"
            );

            // A PUBACK held for a connection that has gone is not sent to the next one in
            // its slot.
            let (mut gone, gone_rx, _) =
                LinkBuilder::new("gone", router_tx.clone()).build().unwrap();
            publish(&mut gone, "up/b", 7);
            let seventh = next_offset(&mut holder_rx);
            let slot = gone_rx.id();
            router_tx.send((slot, Event::Disconnect)).unwrap();
            let (mut next, mut next_rx, _) =
                LinkBuilder::new("next", router_tx.clone()).build().unwrap();
            assert_eq!(
                next_rx.id(),
                slot,
                "the slot was not reused: the test shows nothing"
            );
            holder
                .release_acks(HELD, vec![(seventh, PubAckReason::Success)])
                .unwrap();
            publish(&mut next, "elsewhere", 8);
            assert_eq!(
                next_puback(&mut next_rx),
                8,
                "the old connection's PUBACK reached the new one"
            );
        }
    }
}
