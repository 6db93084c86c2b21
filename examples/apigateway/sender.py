# The seed's "Message Sender Utility" (docs 004, "Backend Implementation"), copied unchanged
# but for the endpoint_url line. Before:
#     endpoint_url=f"https://{os.environ['API_ID']}.execute-api.{os.environ['REGION']}.amazonaws.com/{os.environ['STAGE']}"
# After: the Signalbox node's base URL plus the stage, e.g. http://127.0.0.1:8080/prod
# (any one-segment stage works; /@connections/{id} is served under it too).
# Credentials and region come from the usual AWS environment (AWS_ACCESS_KEY_ID,
# AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION): a pair listed in SIGNALBOX_APIGW_CREDENTIALS.
import boto3
import json
import os

def send_message(connection_id, message_data):
    """Send a message to a connected client."""
    api_client = boto3.client(
        'apigatewaymanagementapi',
        endpoint_url=f"{os.environ['SIGNALBOX_URL']}/{os.environ['STAGE']}"
    )
    
    try:
        api_client.post_to_connection(
            ConnectionId=connection_id,
            Data=json.dumps(message_data).encode('utf-8')
        )
        return True
    except Exception as e:
        print(f"Error sending message to {connection_id}: {str(e)}")
        return False


# demo: what examples/apigateway/run calls from the shell; not part of the seed.
#   python3 sender.py post CONNECTION_ID JSON   -> send_message(), prints its result
#   python3 sender.py get CONNECTION_ID         -> get_connection() through the same endpoint
if __name__ == "__main__":  # demo
    import sys  # demo
    if sys.argv[1] == "post":  # demo
        print("send_message returned", send_message(sys.argv[2], json.loads(sys.argv[3])))  # demo
    elif sys.argv[1] == "get":  # demo
        client = boto3.client("apigatewaymanagementapi", endpoint_url=f"{os.environ['SIGNALBOX_URL']}/{os.environ['STAGE']}")  # demo
        info = client.get_connection(ConnectionId=sys.argv[2])  # demo
        info.pop("ResponseMetadata", None)  # demo
        print("get_connection:", json.dumps(info, default=str))  # demo
